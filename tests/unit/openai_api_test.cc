// OpenAI's request fields read into an OpenAiRequest (each endpoint's
// rules, fields refused by name, wrong types), and the JSON shapes of
// responses, chunks and errors.
#include "router/openai_api.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

OpenAiLimits Limits() {
  OpenAiLimits limits;
  limits.model_name = "tiny";
  limits.max_choices = 4;
  limits.max_stop_strings = 2;
  return limits;
}

absl::StatusOr<OpenAiRequest> Completions(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, Json::parse(body), Limits());
}
absl::StatusOr<OpenAiRequest> Chat(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChat, Json::parse(body), Limits());
}

TEST(OpenAiApiTest, ReadsACompletionsRequest) {
  auto r = Completions(R"({"model": "tiny", "prompt": "hi", "max_tokens": 5, "temperature": 0.5,
      "top_p": 0.9, "top_k": -1, "seed": -3, "stop": ["a", "b"], "n": 2, "stream": true,
      "stream_options": {"include_usage": true}, "logprobs": 3, "ignore_eos": true,
      "user": "u", "some_unknown_field": {"x": 1}, "tpot_slo_ms": 25})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0].text, "hi");
  EXPECT_EQ(r->sampling.max_tokens(), 5u);
  EXPECT_FLOAT_EQ(r->sampling.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p(), 0.9f);
  EXPECT_EQ(r->sampling.top_k(), 0u);  // -1: no limit
  EXPECT_EQ(static_cast<int64_t>(r->sampling.seed()), -3);
  EXPECT_EQ(r->sampling.stop_size(), 2);
  EXPECT_EQ(r->n, 2);
  EXPECT_TRUE(r->stream && r->include_usage);
  EXPECT_EQ(r->logprobs, 3);
  EXPECT_TRUE(r->sampling.return_logprob());
  EXPECT_EQ(r->sampling.top_logprobs(), 3u);
  EXPECT_TRUE(r->sampling.ignore_eos());
  EXPECT_TRUE(r->add_special_tokens);
  EXPECT_EQ(r->tpot_slo_ms, 25);  // checked by the router (GenerateRequest's)
}

TEST(OpenAiApiTest, LeavesUnsetFieldsToTheModel) {
  auto r = Completions(R"({"prompt": "hi"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sampling.max_tokens(), 0u);  // up to the context length
  EXPECT_FALSE(r->sampling.has_temperature());
  EXPECT_FALSE(r->sampling.has_top_p());
  EXPECT_FALSE(r->sampling.has_seed());
  EXPECT_EQ(r->logprobs, -1);
  EXPECT_EQ(r->tpot_slo_ms, 0);
  EXPECT_FALSE(r->include_usage);
}

TEST(OpenAiApiTest, ReadsEveryPromptShape) {
  auto ids = Completions(R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->prompts.size(), 1u);
  EXPECT_TRUE(ids->prompts[0].is_ids);
  EXPECT_THAT(ids->prompts[0].ids, ::testing::ElementsAre(1, 2, 3));
  auto texts = Completions(R"({"prompt": ["a", "b"]})");
  ASSERT_TRUE(texts.ok());
  EXPECT_EQ(texts->prompts.size(), 2u);
  auto lists = Completions(R"({"prompt": [[1], [2, 3]]})");
  ASSERT_TRUE(lists.ok());
  EXPECT_EQ(lists->prompts.size(), 2u);
  for (const char* bad : {R"({"prompt": []})", R"({"prompt": 3})", R"({"prompt": [-1]})",
                          R"({"prompt": [[]]})", R"({"prompt": [{"a": 1}]})", R"({})"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(Completions(bad).status())) << bad;
  }
}

TEST(OpenAiApiTest, RefusesUnsupportedFieldsByName) {
  for (const auto& [body, name] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": "x", "frequency_penalty": 0.1})", "frequency_penalty"},
           {R"({"prompt": "x", "presence_penalty": -1})", "presence_penalty"},
           {R"({"prompt": "x", "logit_bias": {"5": 10}})", "logit_bias"},
           {R"({"prompt": "x", "response_format": {"type": "json_object"}})", "response_format"},
           {R"({"prompt": "x", "echo": true})", "echo"},
           {R"({"prompt": "x", "best_of": 3})", "best_of"},
           {R"({"prompt": "x", "suffix": "end"})", "suffix"},
           {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})",
            "tool_choice"}}) {
    const bool chat = body.find("messages") != std::string::npos;
    const absl::Status status = (chat ? Chat(body) : Completions(body)).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << body;
    EXPECT_THAT(status.message(), HasSubstr("`" + name + "` is not supported")) << body;
  }
  // What shift does anyway is accepted.
  EXPECT_TRUE(Completions(R"({"prompt": "x", "frequency_penalty": 0, "logit_bias": {},
      "response_format": {"type": "text"}, "echo": false, "best_of": 1})")
                  .ok());
}

TEST(OpenAiApiTest, RefusesWrongTypesAndRangesNamingTheField) {
  for (const auto& [body, name] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": "x", "max_tokens": "5"})", "max_tokens"},
           {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
           {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens"},
           {R"({"prompt": "x", "temperature": "hot"})", "temperature"},
           {R"({"prompt": "x", "temperature": -1})", "temperature"},
           {R"({"prompt": "x", "top_p": 0})", "top_p"},
           {R"({"prompt": "x", "n": 5})", "n"},
           {R"({"prompt": "x", "n": 0})", "n"},
           {R"({"prompt": "x", "stop": ["a", "b", "c"]})", "stop"},
           {R"({"prompt": "x", "stop": [1]})", "stop"},
           {R"({"prompt": "x", "stream": "yes"})", "stream"},
           {R"({"prompt": "x", "logprobs": 21})", "logprobs"},
           {R"({"prompt": "x", "model": 7})", "model"},
           {R"({"prompt": "x", "user": 7})", "user"}}) {
    const absl::Status status = Completions(body).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << body;
    EXPECT_THAT(status.message(), HasSubstr("`" + name + "`")) << body;
  }
  const absl::Status model = Completions(R"({"prompt": "x", "model": "other"})").status();
  EXPECT_TRUE(absl::IsNotFound(model));
  EXPECT_THAT(model.message(), HasSubstr("`other` does not exist"));
  EXPECT_TRUE(absl::IsInvalidArgument(
      ParseOpenAiRequest(OpenAiEndpoint::kCompletions, Json::array(), Limits()).status()));
}

TEST(OpenAiApiTest, ReadsAChatRequestIntoTemplateVariables) {
  auto r = Chat(R"({"messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
      {"role": "tool", "content": "42", "tool_call_id": "1"}],
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "chat_template_kwargs": {"enable_thinking": false},
    "max_completion_tokens": 7, "logprobs": true, "top_logprobs": 2})");
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& vars = r->template_vars;
  ASSERT_EQ(vars["messages"].size(), 4u);
  EXPECT_EQ(vars["messages"][1]["content"], "a\nb");
  EXPECT_TRUE(vars["messages"][2]["content"].is_null());
  EXPECT_EQ(vars["messages"][2]["tool_calls"][0]["id"], "1");
  EXPECT_EQ(vars["messages"][3]["tool_call_id"], "1");
  EXPECT_EQ(vars["tools"].size(), 1u);
  EXPECT_TRUE(r->has_tools);
  EXPECT_EQ(vars["add_generation_prompt"], true);
  EXPECT_EQ(vars["enable_thinking"], false);
  EXPECT_EQ(r->sampling.max_tokens(), 7u);
  EXPECT_EQ(r->logprobs, 2);
  EXPECT_FALSE(r->add_special_tokens);  // the template holds them
}

TEST(OpenAiApiTest, RefusesBadMessages) {
  for (
      const char* bad : {
          R"({"messages": []})",
          R"({"messages": [{"content": "x"}]})",
          R"({"messages": [{"role": "wizard", "content": "x"}]})",
          R"({"messages": [{"role": "user"}]})",
          R"({"messages": [{"role": "user", "content": 5}]})",
          R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
          R"({"messages": ["hi"]})",
          R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
          R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": 1})",
      }) {
    EXPECT_TRUE(absl::IsInvalidArgument(Chat(bad).status())) << bad;
  }
}

TEST(OpenAiApiTest, MeasuresNestingWithoutParsing) {
  EXPECT_EQ(JsonNestingDepth(R"({"a": [1, {"b": []}]})"), 4);
  EXPECT_EQ(JsonNestingDepth(R"({"a": "[[[[{{{{"})"), 1);  // inside a string
  EXPECT_EQ(JsonNestingDepth(R"(["\"[[["])"), 1);          // escaped quote
  EXPECT_EQ(JsonNestingDepth(std::string(100000, '[')), 100000);
}

TEST(OpenAiApiTest, MapsErrorsToHttpStatuses) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  const Json error = Json::parse(OpenAiErrorBody(429, "the queue is full"));
  EXPECT_EQ(error["error"]["message"], "the queue is full");
  EXPECT_EQ(error["error"]["type"], "rate_limit_error");
  EXPECT_EQ(error["error"]["code"], 429);
}

std::string Name(int32_t id) { return id == 1 ? " a" : "\xE2\x82"; }  // the 2nd: half a char

TEST(OpenAiApiTest, ShapesResponsesAsOpenAiDoes) {
  v1::TokenLogprob lp;
  lp.set_token_id(1);
  lp.set_logprob(-0.5f);
  auto* top = lp.add_top();
  top->set_token_id(2);
  top->set_logprob(-std::numeric_limits<float>::infinity());
  ChoiceOutput c;
  c.index = 0;
  c.text = " a";
  c.logprobs = {lp};
  c.finish_reason = v1::FINISH_REASON_EOS;
  const Json usage = OpenAiUsage(3, 1, 2);
  EXPECT_EQ(usage["total_tokens"], 4);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 2);

  const Json completion =
      OpenAiResponse(OpenAiEndpoint::kCompletions, "cmpl-1", 7, "tiny", {c}, usage, 1, Name);
  EXPECT_EQ(completion["object"], "text_completion");
  EXPECT_EQ(completion["choices"][0]["text"], " a");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(completion["choices"][0]["logprobs"]["tokens"][0], " a");
  EXPECT_EQ(completion["choices"][0]["logprobs"]["token_logprobs"][0], -0.5);
  EXPECT_EQ(completion["choices"][0]["logprobs"]["top_logprobs"][0].size(), 1u);
  EXPECT_EQ(completion["choices"][0]["logprobs"]["text_offset"][0], 0);

  const Json chat =
      OpenAiResponse(OpenAiEndpoint::kChat, "chatcmpl-1", 7, "tiny", {c}, usage, 1, Name);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], " a");
  const Json& entry = chat["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], " a");
  EXPECT_EQ(entry["bytes"], Json::array({32, 97}));
  EXPECT_EQ(entry["top_logprobs"][0]["logprob"], -9999.0);  // -inf has no JSON number
  EXPECT_EQ(entry["top_logprobs"][0]["bytes"], Json::array({0xE2, 0x82}));
  // Half a UTF-8 character in a token's text still makes valid JSON.
  const std::string event = SseEvent(chat);
  EXPECT_EQ(event.rfind("data: ", 0), 0u);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  EXPECT_NO_THROW(Json::parse(event.substr(6)));
}

TEST(OpenAiApiTest, ShapesStreamedChunks) {
  const Json first = OpenAiChunk(OpenAiEndpoint::kChat, "c", 1, "tiny", 1, "Hi", {}, -1,
                                 /*first=*/true, std::nullopt, Name);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["index"], 1);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const Json last = OpenAiChunk(OpenAiEndpoint::kChat, "c", 1, "tiny", 1, "", {}, -1, false,
                                v1::FINISH_REASON_LENGTH, Name);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const Json text = OpenAiChunk(OpenAiEndpoint::kCompletions, "c", 1, "tiny", 0, "x", {}, -1, true,
                                std::nullopt, Name);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "x");
  const Json usage = OpenAiUsageChunk(OpenAiEndpoint::kChat, "c", 1, "tiny", OpenAiUsage(1, 2, 0));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 2);
}

}  // namespace
}  // namespace shift
