// shift_jinja: the 95 reference renderings of ../shared/data/chat_templates
// byte for byte, Python/Jinja2 semantics case by case, and the sandbox's limits.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jinja/chat_template.h"
#include "jinja/template.h"
#include "nlohmann/json.hpp"

namespace jinja {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

std::string ChatTemplatesDir() {
  const char* shared = std::getenv("SHIFT_SHARED_DATA");
  return std::string(shared ? shared : "../shared/data") + "/chat_templates";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::tm FixedNow() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 0;
  tm.tm_mday = 15;
  tm.tm_wday = 4;
  tm.tm_yday = 14;
  return tm;
}

// Renders `source` with `vars` (JSON text); errors come back as their message.
std::string Render(const std::string& source, const std::string& vars = "{}",
                   const RenderOptions& options = {}) {
  auto t = Template::Parse(source);
  if (!t.ok()) return "ERROR " + std::string(t.status().message());
  auto out = t->Render(json::parse(vars), options);
  if (!out.ok()) return "ERROR " + std::string(out.status().message());
  return *out;
}

TEST(ChatTemplateReferenceTest, AllCasesRenderByteForByte) {
  const std::string dir = ChatTemplatesDir();
  if (!std::filesystem::exists(dir + "/cases.jsonl")) {
    GTEST_SKIP() << "../shared/data/chat_templates is absent";
  }
  std::ifstream cases(dir + "/cases.jsonl");
  std::string line;
  int count = 0, errors = 0;
  RenderOptions options;
  options.now = FixedNow;
  while (std::getline(cases, line)) {
    if (line.empty()) continue;
    const json c = json::parse(line);
    const std::string id = c["id"].get<std::string>();
    ++count;
    auto t = Template::Parse(ReadAll(dir + "/" + c["template"].get<std::string>()));
    ASSERT_TRUE(t.ok()) << id << ": " << t.status();
    auto out = t->Render(c["vars"], options);
    if (c.contains("error")) {
      ++errors;
      ASSERT_FALSE(out.ok()) << id << " rendered instead of failing";
      EXPECT_EQ(out.status().code(), absl::StatusCode::kAborted) << id;
      EXPECT_EQ(out.status().message(), c["error"].get<std::string>()) << id;
    } else {
      ASSERT_TRUE(out.ok()) << id << ": " << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>()) << id;
    }
  }
  EXPECT_EQ(count, 95);
  EXPECT_EQ(errors, 6);
}

TEST(JinjaWhitespaceTest, TrimAndLstripBlocksAsTransformers) {
  EXPECT_EQ(Render("{% if true %}\n  yes\n{% endif %}\n"), "  yes\n");
  EXPECT_EQ(Render("a\n    {% if true %}b{% endif %}"), "a\nb");
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%- if true %}b{% endif %}"), "ab");
  EXPECT_EQ(Render("x  {%+ if true %}y{% endif %}"), "x  y");
  EXPECT_EQ(Render("a{# c #}\nb"), "ab");
  EXPECT_EQ(Render("line\r\nnext\r\n"), "line\nnext");
  EXPECT_EQ(Render("end\n\n"), "end\n");
  EXPECT_EQ(Render("  {{ 1 }}"), "  1");
}

TEST(JinjaExpressionTest, PythonSemantics) {
  EXPECT_EQ(Render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"),
            "3 -4 2 3.5 1024");
  EXPECT_EQ(Render("{{ 1.0 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1e-5 }} {{ 25.0 }}"),
            "1.0 1e+20 0.30000000000000004 1e-05 25.0");
  EXPECT_EQ(Render("{{ [1, 'a', none, true, {'k': 2.5}] }}"), "[1, 'a', None, True, {'k': 2.5}]");
  EXPECT_EQ(Render("{{ (1,) }} {{ (1, 2) }} {{ \"it's\" }}"), "(1,) (1, 2) it's");
  EXPECT_EQ(Render("{{ ['it\\'s'] }}"), "[\"it's\"]");
  EXPECT_EQ(Render("{{ 'ab' 'cd' }} {{ 'x' * 3 }} {{ [1] + [2] }} {{ 1 ~ 'a' }}"),
            "abcd xxx [1, 2] 1a");
  EXPECT_EQ(Render("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'b' in 'abc' }} {{ 2 not in [1] }}"),
            "True False True True");
  EXPECT_EQ(Render("{{ 0 or 'x' }} {{ 1 and [] }} {{ not 0 }}"), "x [] True");
  EXPECT_EQ(Render("{{ 'y' if false }}|{{ 'a' if 0 else 'b' }}"), "|b");
  EXPECT_EQ(Render("{{ 'héllo'[1] }} {{ 'héllo'[::-1] }} {{ [1,2,3,4][1:3] }} {{ [1,2,3][-1] }}"),
            "é olléh [2, 3] 3");
  EXPECT_EQ(Render("{{ 'héllo'|length }} {{ '  x\u3000'|trim }}|"), "5 x|");
  EXPECT_EQ(Render("{{ d.a }} {{ d['a'] }} {{ d.items() | list }}", R"({"d": {"a": 1}})"),
            "1 1 [('a', 1)]");
  EXPECT_EQ(Render("{{ x.y }}|{{ x is defined }}|{% for i in x %}no{% endfor %}", R"({"x": {}})"),
            "|True|");
}

TEST(JinjaStatementTest, LoopsScopesMacros) {
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ loop.index }}{{ k }}={{ v }}"
                   "{% if not loop.last %},{% endif %}{% endfor %}",
                   R"({"d": {"a": 1, "b": 2}})"),
            "1a=1,2b=2");
  EXPECT_EQ(Render("{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}"),
            "2242");
  EXPECT_EQ(Render("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for x in [1,2,3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}"
                   "{% if x == 3 %}{% break %}{% endif %}{% endfor %}"),
            "13");
  EXPECT_EQ(Render("{% set x = 0 %}{% for i in [1,2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}"
                   "{{ x }}"),
            "01020");
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in [1,2] %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(Render("{% macro f(n, s='!') %}{% if n > 0 %}{{ n }}{{ f(n - 1, s) }}{% else %}{{ s }}"
                   "{% endif %}{% endmacro %}{{ f(3) }}{{ f(1, s='?') }}"),
            "321!1?");
  EXPECT_EQ(
      Render("{% set b %}  hi  {% endset %}[{{ b }}]{% set c | trim %} x {% endset %}[{{ c }}]"),
      "[  hi  ][x]");
  EXPECT_EQ(Render("{% filter upper %}abc{% endfilter %}"), "ABC");
  EXPECT_EQ(Render("{% for a in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}"),
            "-2;1-3;2-;");
}

// What the differential test (tests/python/jinja_differential_test.py) found.
TEST(JinjaQuirkTest, Jinja2QuirksKept) {
  // `else` runs unless an iteration reached the end of the body.
  EXPECT_EQ(Render("{% for x in [1, 2] %}{{ x }}{% break %}{% else %}E{% endfor %}"), "1E");
  EXPECT_EQ(Render("{% for x in [1, 2] %}{{ x }}{% continue %}{% else %}E{% endfor %}"), "12E");
  EXPECT_EQ(Render("{% for x in [1, 2] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}"
                   "{% else %}E{% endfor %}"),
            "1");
  // Set and filter blocks are frames of their own.
  EXPECT_EQ(Render("{% set b %}{% set x = 1 %}{% endset %}[{{ x }}]"), "[]");
  EXPECT_EQ(
      Render("{% filter upper %}{% macro m() %}{% endmacro %}{% endfilter %}{{ m is defined }}"),
      "False");
  // Unknown filters inside `if` fail only when evaluated.
  EXPECT_EQ(Render("{% if false %}{{ 1|nosuch }}{% endif %}ok"), "ok");
  EXPECT_THAT(Render("{% if true %}{{ 1|nosuch }}{% endif %}"),
              HasSubstr("TemplateRuntimeError: No filter named 'nosuch' found."));
  EXPECT_THAT(Render("{% for x in [] %}{{ 1|nosuch }}{% endfor %}"),
              HasSubstr("TemplateAssertionError"));
  // Slices: Python's own, except where the optimizer folded a constant.
  EXPECT_EQ(Render("{{ true[1:] }}|{{ none ~ 5[1:] }}"), "|None");
  EXPECT_THAT(Render("{% set v = true[1:] %}"), HasSubstr("'bool' object is not subscriptable"));
  EXPECT_THAT(Render("{{ d[1:] }}", R"({"d": {}})"), HasSubstr("unhashable type: 'slice'"));
  // |safe is Markup: + escapes the other side, repr says so; ~ does not escape.
  EXPECT_EQ(Render("{{ ('a<'|safe) + '<' }}|{{ ('a<'|safe) ~ '<' }}|{{ ['x'|safe] }}"),
            "a<&lt;|a<<|[Markup('x')]");
  EXPECT_THAT(Render("{{ 2.5|indent }}"), HasSubstr("unsupported operand type(s) for +="));
  EXPECT_EQ(Render("{{ ' a b  '.split(None, 1) }}|{{ ' a b '.rsplit(None, 1) }}"),
            "['a', 'b  ']|[' a', 'b']");
  EXPECT_EQ(Render("{{ 'ǅx' is lower }}{{ 'Ⅻ'|lower }}"), "Falseⅻ");
}

TEST(JinjaFilterTest, FiltersAsJinja2) {
  EXPECT_EQ(Render("{{ d | tojson }}", R"({"d": {"b": 1, "a": [25.0, "é\n"]}})"),
            "{\"b\": 1, \"a\": [25.0, \"é\\n\"]}");
  EXPECT_EQ(Render("{{ d | tojson(indent=2, sort_keys=true) }}", R"({"d": {"b": 1, "a": []}})"),
            "{\n  \"a\": [],\n  \"b\": 1\n}");
  EXPECT_EQ(Render("{{ d | tojson(separators=(',', ':')) }}", R"({"d": [1, {"x": null}]})"),
            "[1,{\"x\":null}]");
  EXPECT_EQ(Render("{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}"),
            "a\n  b\n\n  c|  a\n  b");
  EXPECT_EQ(Render("{{ xs | map(attribute='n') | join(',') }} {{ xs | selectattr('n', 'gt', 1) | "
                   "list | length }} {{ xs | rejectattr('n') | list }}",
                   R"({"xs": [{"n": 1}, {"n": 2}, {"n": 0}]})"),
            "1,2,0 1 [{'n': 0}]");
  EXPECT_EQ(
      Render("{{ ['b', 'A', 'c'] | sort | join }} {{ [3, 1, 2] | sort(reverse=true) | list }}"),
      "Abc [3, 2, 1]");
  EXPECT_EQ(Render("{{ {'b': 1, 'a': 2} | dictsort }} {{ ['a', 'A', 'b'] | unique | list }}"),
            "[('a', 2), ('b', 1)] ['a', 'b']");
  EXPECT_EQ(Render("{{ x | default('d') }} {{ '' | default('e', true) }} {{ '3.7' | float }} "
                   "{{ '42' | int }} {{ 3.9 | int }} {{ -2 | abs }}"),
            "d e 3.7 42 3 2");
  EXPECT_EQ(Render("{{ 'hello wORLD-x' | title }} {{ 'hello World' | capitalize }} "
                   "{{ 'aXb' | upper }} {{ 'a b a' | replace('a', 'c') }}"),
            "Hello World-X Hello world AXB c b c");
  EXPECT_EQ(Render("{{ [1, 2] | first }}{{ [1, 2] | last }}{{ 'ab' | list }}{{ none | string }}"),
            "12['a', 'b']None");
}

TEST(JinjaMethodTest, StringAndDictMethods) {
  EXPECT_EQ(Render("{{ ' a b '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|"
                   "{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}"),
            "a b|a|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']");
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} "
                   "{{ \"they're bill's\".title() }}"),
            "True True They'Re Bill'S");
  EXPECT_EQ(
      Render("{{ d.get('a') }} {{ d.get('z', 5) }} {{ d.keys() | list }} {{ d.values() | list }}",
             R"({"d": {"a": 1}})"),
      "1 5 ['a'] [1]");
}

TEST(JinjaErrorTest, ErrorsCarryJinja2Messages) {
  EXPECT_EQ(Render("{{ raise_exception('bad role') }}"), "ERROR bad role");
  EXPECT_EQ(Render("{{ x.y }}"), "ERROR UndefinedError: 'x' is undefined");
  EXPECT_EQ(Render("{{ d.a.b }}", R"({"d": {}})"),
            "ERROR UndefinedError: 'dict object' has no attribute 'a'");
  EXPECT_EQ(Render("{{ x + 1 }}"), "ERROR UndefinedError: 'x' is undefined");
  EXPECT_EQ(Render("{{ [].append(1) }}"),
            "ERROR SecurityError: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_THAT(Render("{{ 1 | nosuchfilter }}"), HasSubstr("No filter named 'nosuchfilter'."));
  EXPECT_THAT(Render("{{ 1 is nosuchtest }}"), HasSubstr("No test named 'nosuchtest'."));
  EXPECT_THAT(Render("{% if x %}never closed"), HasSubstr("TemplateSyntaxError"));
  EXPECT_THAT(Render("{{ 1 + }}"), HasSubstr("TemplateSyntaxError"));
  EXPECT_THAT(Render("{{ unterminated"), HasSubstr("TemplateSyntaxError"));
  EXPECT_THAT(Render("{% for x in y %}"), HasSubstr("TemplateSyntaxError"));
  EXPECT_THAT(Render("{# never closed"), HasSubstr("Missing end of comment tag"));
  EXPECT_THAT(Render("{% frobnicate %}"), HasSubstr("Encountered unknown tag 'frobnicate'."));
  EXPECT_THAT(Render("{{ 1 / 0 }}"), HasSubstr("ZeroDivisionError"));
  EXPECT_THAT(Render("{{ 'a' + 1 }}"), HasSubstr("TypeError"));
}

TEST(JinjaSandboxTest, LimitsStopHostileTemplates) {
  RenderOptions small;
  small.limits.max_output_bytes = 1 << 20;
  small.limits.max_loop_iterations = 100000;
  small.limits.max_recursion_depth = 50;
  // Loops forever (as far as a template can): nested ranges.
  EXPECT_THAT(Render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
                     "{% endfor %}",
                     "{}", small),
              HasSubstr("LimitError"));
  // Recursion without end.
  EXPECT_THAT(Render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{}", small),
              HasSubstr("LimitError: macro calls nested deeper than 50"));
  // At the default limits, with deep expressions on every level: a clear
  // error, not a stack overflow (also under ASan).
  const std::string deep = std::string(90, '[') + "f(n + 1)" + std::string(90, ']');
  EXPECT_THAT(Render("{% macro f(n) %}{{ " + deep + " }}{% endmacro %}{{ f(0) }}"),
              HasSubstr("LimitError"));
  EXPECT_EQ(Render("{{ " + std::string(90, '(') + "1" + std::string(90, ')') + " }}"), "1");
  std::string ifs, endifs;
  for (int i = 0; i < 12; ++i) {
    ifs += "{% if true %}{% for x in [1] %}{% set y %}";
    endifs += "{% endset %}{{ y }}{% endfor %}{% endif %}";
  }
  EXPECT_THAT(Render("{% macro f() %}" + ifs + "{{ f() }}" + endifs + "{% endmacro %}{{ f() }}"),
              HasSubstr("LimitError"));
  // A gigabyte of output, three ways.
  EXPECT_THAT(Render("{{ 'x' * 1000000000 }}", "{}", small), HasSubstr("LimitError"));
  EXPECT_EQ(
      Render("{{ '' * 1000000000 }}{{ [] * 1000000000 }}{{ 'y' * 0 * 1000000000 }}", "{}", small),
      "[]");
  EXPECT_THAT(Render("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "{}", small),
              HasSubstr("LimitError"));
  EXPECT_THAT(Render("{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
                     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
                     "{}", small),
              HasSubstr("LimitError"));
  // Exponentially large values through sharing, printed.
  EXPECT_THAT(Render("{% set ns = namespace(x=[1]) %}{% for i in range(80) %}"
                     "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
                     "{}", small),
              HasSubstr("LimitError"));
  // Values nested deeper than the sandbox allows.
  EXPECT_THAT(Render("{% set ns = namespace(x=1) %}{% for i in range(100000) %}"
                     "{% set ns.x = [ns.x] %}{% endfor %}",
                     "{}", small),
              HasSubstr("LimitError"));
  // Deeply nested source.
  EXPECT_THAT(Render("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}"),
              HasSubstr("nested too deeply"));
  EXPECT_THAT(Render(std::string(20000, '[') + "{{ " + std::string(10000, '[') + " }}"),
              HasSubstr("TemplateSyntaxError"));
  std::string blocks;
  for (int i = 0; i < 10000; ++i) blocks += "{% if true %}";
  EXPECT_THAT(Render(blocks), HasSubstr("nested too deeply"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  EXPECT_THAT(Render(chain + " }}"), HasSubstr("nested too deeply"));
  EXPECT_THAT(Render("{{ range(1000000) | length }}"), HasSubstr("MAX_RANGE"));
}

TEST(LoadChatTemplateTest, PicksTheTemplateAsTransformers) {
  const std::string config = R"({"chat_template": [
      {"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]})";
  EXPECT_EQ(*ChatTemplateFromConfig(config, false, "c"), "D");
  EXPECT_EQ(*ChatTemplateFromConfig(config, true, "c"), "T");
  EXPECT_EQ(*ChatTemplateFromConfig(R"({"chat_template": "S"})", true, "c"), "S");
  EXPECT_EQ(
      ChatTemplateFromConfig(R"({"chat_template": [{"name": "x", "template": "X"}]})", false, "c")
          .status()
          .code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(ChatTemplateFromConfig("{}", false, "c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ChatTemplateFromConfig("not json", false, "c").ok());

  const auto dir =
      std::filesystem::temp_directory_path() / ("jinja_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "tokenizer_config.json") << config; }
  EXPECT_EQ(*LoadChatTemplate(dir.string(), "", true), "T");
  { std::ofstream(dir / "chat_template.jinja") << "J"; }
  EXPECT_EQ(*LoadChatTemplate(dir.string(), "", true), "J");
  { std::ofstream(dir / "override.jinja") << "O"; }
  EXPECT_EQ(*LoadChatTemplate(dir.string(), (dir / "override.jinja").string(), true), "O");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(LoadChatTemplate(dir.string(), "", false).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace jinja
