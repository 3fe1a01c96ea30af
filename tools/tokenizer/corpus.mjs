// strata's tokenizer corpus: what an inference server meets. Each entry is
// [name, text]; the expected ids come from tiktoken and Hugging Face
// tokenizers (export.mjs), never from strata.
const ws = [
  "\t", "\n", "\u000b", "\f", "\r", " ", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003",
  "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f",
  "\u3000", "\r\n", "\u200b", "\ufeff",
];

export function corpus() {
  const c = [
    ["empty", ""],
    ["english", "The quick brown fox jumps over the lazy dog. It wasn't me, she said; they'd already left!"],
    ["prose", "In 1905, Albert Einstein published four papers. The third—on special relativity—changed physics forever.\n\nChapter 2\n\nIt was a dark and stormy night; the rain fell in torrents."],
    ["contractions", "I'm you're he's she'd we'll they've it's can't won't Y'ALL I'M WE'LL THEY'VE Don'T DON'T o'clock rock'n'roll '' 's 'S 'd 'Re 'vE 'LL"],
    ["contractions_unicode", "it\u2019s don\u2019t I\u2018m 'ſ 'ſt"],
    ["code_python", "def f(x):\n\tif x > 10:\n\t\treturn x ** 2  # square\n    else:\n        return [i for i in range(x)]\n\n\n"],
    ["code_c", "int main(int argc, char** argv) {\n    printf(\"%d\\n\", argc);\n    return 0;\n}\n"],
    ["space_runs", "a    b        c                                d\t\t\te \n \n  \n   f  "],
    ["trailing_spaces", "end with spaces     "],
    ["only_spaces", "          "],
    ["newlines", "\n\n\nline\r\n\r\nline2\n \n\t\n"],
    ["numbers", "0 1 12 123 1234 12345 123456 1234567 3.14159 -42 1e10 0x1F 2024-11-27 1,000,000 ٣٤٥ ½ ² ⅷ 10⁹"],
    ["long_number", "31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679"],
    ["chinese", "我们今天去北京大学看看。人工智能正在改变世界,但它也带来了新的挑战。"],
    ["japanese", "東京は日本の首都です。ひらがなとカタカナ、そして漢字を混ぜて書きます。ｶﾀｶﾅ"],
    ["korean", "안녕하세요! 대규모 언어 모델은 빠르게 발전하고 있습니다."],
    ["arabic", "مرحبا بالعالم. اللغة العربية تكتب من اليمين إلى اليسار، والأرقام ١٢٣."],
    ["hebrew_russian_greek", "שלום עולם. Привет, мир! Γειά σου Κόσμε."],
    ["hindi_thai", "नमस्ते दुनिया। สวัสดีชาวโลก"],
    ["emoji", "I ❤️ llamas 🦙🦙! Family: 👨‍👩‍👧‍👦 thumbs 👍🏽👍🏿 flags 🇫🇷🇯🇵 keycap 1️⃣ ZWJ 🏳️‍🌈"],
    ["combining", "e\u0301 a\u0300\u0301\u0302 Zalgo: Z\u0351\u036b\u0343a\u0310l\u0302g\u0308o\u0336 n\u0303 \u1e9b\u0323"],
    ["special_lookalike", "<|begin_of_text|>hello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<|python_tag|> <|reserved_special_token_5|> <| not special |>"],
    ["punctuation", "!!! ??? ... --- ;;; ((())) [[]] {{}} <<>> @#$%^&*_+=~`|\\/ \"quoted\" 'single' «guillemets» „low“"],
    ["mixed_script", "GPT-4o和Llama3.1在2024年发布;Привет123мир;abc١٢٣def"],
    ["url_email", "https://example.com/path?query=1&x=%20y#frag mail@example.org C:\\Users\\name\\file.txt"],
    ["json", "{\"name\": \"strata\", \"layers\": [1, 2, 3], \"ok\": true, \"nested\": {\"k\": null}}"],
    ["markdown", "# Title\n\n- item *one*\n- item **two**\n\n```cpp\nint x = 1;\n```\n\n| a | b |\n|---|---|\n"],
    ["control_chars", "a\u0000b\u0001c\u001fd\u007fe"],
    ["private_use_and_rare", "\ue000\uf8ff \u{10ffff} \u{1d400}\u{1d401} \u{20000}𠀀"],
  ];
  for (let i = 0; i < ws.length; ++i) {
    c.push([`whitespace_${i}`, `a${ws[i]}b${ws[i]}${ws[i]}c ${ws[i]}d${ws[i]} `]);
  }
  c.push(["all_whitespace_run", ws.join("") + "x" + ws.join("")]);
  c.push(["repeated_a_100k", "a".repeat(100000)]);
  c.push(["repeated_space_100k", " ".repeat(100000) + "z"]);
  c.push(["repeated_emoji", "🦙".repeat(2000)]);
  c.push(["repeated_digits", "7".repeat(5000)]);
  c.push(["repeated_punct", "!?".repeat(3000)]);
  return c;
}
