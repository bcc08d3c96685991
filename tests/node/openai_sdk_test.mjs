// The official openai package (4.x, pinned in package.json) against shift's
// OpenAI-compatible HTTP API: every call below parses with the SDK's own
// types and error classes. Run by tests/python/openai_sdk_test.py, which
// starts the routers and passes their addresses:
//   SHIFT_BASE_URL, SHIFT_API_KEY, SHIFT_METRICS_URL  the main router
//   SHIFT_SMALL_BASE_URL                             a router whose queue holds 1
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.SHIFT_BASE_URL;
const apiKey = process.env.SHIFT_API_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
const models = await client.models.list();
const model = models.data[0].id;
const messages = [{ role: 'user', content: 'Say something.' }];
const results = [];

async function check(name, fn) {
  await fn();
  results.push(name);
  console.log(`ok - ${name}`);
}

// The sum of the samples named as `series` (name{a="x",...}) with at least
// its labels: shift's series also carry model_name and a group.
async function metric(series) {
  const brace = series.indexOf('{');
  const name = brace < 0 ? series : series.slice(0, brace);
  const wanted = brace < 0 ? [] : series.slice(brace + 1, -1).split(',');
  let text;
  for (let attempt = 0; ; ++attempt) {
    try {
      text = await (await fetch(process.env.SHIFT_METRICS_URL)).text();
      break;
    } catch (e) {
      // The metrics server may close a kept-alive connection as it is reused.
      if (attempt === 2) throw e;
    }
  }
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + ' ') && !line.startsWith(name + '{')) continue;
    const labels = line.slice(name.length, line.lastIndexOf(' '));
    if (wanted.every((label) => labels.includes(label))) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

await check('completions', async () => {
  const r = await client.completions.create({ model, prompt: 'Hello', max_tokens: 5, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.completion_tokens <= 5, true);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
});

await check('chat completions', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, ignore_eos: true,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.usage.completion_tokens, 6);
});

await check('streamed chat with include_usage equals the whole answer', async () => {
  const body = { model, messages, max_tokens: 8, temperature: 0, ignore_eos: true };
  const whole = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({
    ...body, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 8);
});

await check('streamed completions', async () => {
  const stream = await client.completions.create({
    model, prompt: 'Once upon a time', max_tokens: 7, ignore_eos: true, stream: true,
  });
  let chunks = 0;
  for await (const chunk of stream) chunks += chunk.choices.length;
  assert.ok(chunks >= 7);
});

await check('n = 2', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 5, n: 2, seed: 3, temperature: 1, ignore_eos: true,
  });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.usage.completion_tokens, 10);
});

await check('logprobs', async () => {
  const chat = await client.chat.completions.create({
    model, messages, max_tokens: 4, logprobs: true, top_logprobs: 2, ignore_eos: true,
  });
  const content = chat.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  assert.equal(content[0].top_logprobs.length, 2);
  assert.equal(typeof content[0].logprob, 'number');
  const text = await client.completions.create({
    model, prompt: 'Hello', max_tokens: 3, logprobs: 2, ignore_eos: true,
  });
  assert.equal(text.choices[0].logprobs.tokens.length, 3);
  assert.equal(Object.keys(text.choices[0].logprobs.top_logprobs[0]).length, 2);
});

await check('stop strings', async () => {
  const body = { model, prompt: 'The', max_tokens: 12, temperature: 0, ignore_eos: true };
  const free = (await client.completions.create(body)).choices[0].text;
  assert.ok(free.length > 3, `free text ${JSON.stringify(free)}`);
  const stop = free.slice(2, 4);
  const r = await client.completions.create({ ...body, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, free.slice(0, free.indexOf(stop)));
});

await check('a wrong key is 401', async () => {
  const wrong = new OpenAI({ baseURL, apiKey: 'not-a-key', maxRetries: 0 });
  await assert.rejects(
    wrong.completions.create({ model, prompt: 'x', max_tokens: 1 }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
});

await check('an unsupported field is 400 naming it', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages, max_tokens: 1, frequency_penalty: 0.5 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 &&
      e.message.includes('frequency_penalty'),
  );
});

await check('a full queue is 429', async () => {
  // The small router runs one sequence and queues one more. A long stream
  // holds the running slot (its first chunk says it runs), so of the calls
  // sent meanwhile one waits in the queue and the others are refused; the
  // queued one runs once the stream is abandoned.
  const small = new OpenAI({ baseURL: process.env.SHIFT_SMALL_BASE_URL, apiKey, maxRetries: 0 });
  const holder = await small.completions.create({
    model, prompt: 'x', max_tokens: 2000, ignore_eos: true, stream: true,
  });
  const chunks = holder[Symbol.asyncIterator]();
  await chunks.next();
  const calls = Array.from({ length: 4 }, () => small.completions
    .create({ model, prompt: 'x', max_tokens: 1 })
    .then(() => 200, (e) => (e instanceof OpenAI.RateLimitError ? e.status : `other ${e}`)));
  // The first answer comes while the stream still holds the slot.
  const refused = await Promise.race(calls);
  assert.equal(refused, 429);
  holder.controller.abort();
  const statuses = await Promise.all(calls);
  assert.ok(statuses.includes(200), JSON.stringify(statuses));
  assert.ok(statuses.every((s) => s === 200 || s === 429), JSON.stringify(statuses));
});

await check('a stream abandoned midway frees its KV blocks', async () => {
  const cancelled = await metric('shift_request_errors_total{code="CANCELLED"}');
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 1500, ignore_eos: true, stream: true,
  });
  let chunks = 0;
  for await (const chunk of stream) {
    if (++chunks === 3) break; // leaving the loop aborts the request
  }
  const deadline = Date.now() + 10000;
  for (;;) {
    const running = await metric('shift_running_sequences');
    const now = await metric('shift_request_errors_total{code="CANCELLED"}');
    if (running === 0 && now === cancelled + 1) break;
    assert.ok(Date.now() < deadline, `running ${running}, cancelled ${now} (was ${cancelled})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal(await metric('shift_kv_blocks_used'), 0);
});

console.log(`${results.length} checks passed`);
