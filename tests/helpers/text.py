"""Seeded mixed text for the splitter's tests and benchmark (a test helper: not part of the `hat` library).

    from tests.helpers.text import mixed_text
    text = mixed_text(1_000_000, seed=0)   # ~1 MB: prose (en/de), code, CJK, emoji, numbers, URLs, random Unicode

Used by the splitter tests and `benchmarks/bench_splitter.py` (run from the repository root), so both see the same
text. The parity tools that compare two splitters on it are in `tests/helpers/parity.py`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["KINDS", "UNICODE_SAMPLE", "mixed_text", "random_unicode"]

# One line of the hard cases: ß, a combining accent, a ZWJ family, CJK, diaeresis, a number
UNICODE_SAMPLE = "Straße über die Brücke: café (e\u0301) 👨‍👩‍👧 und 漢字, naïve Äpfel größer als 3.14."

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

_EN_WORDS = (
    "the of and to in is was for that with as on by at from his her they this which be have had not are but were "
    "one all an there been if more when will would who so no time people year way day man thing woman life child "
    "world school state family student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money story fact month lot right study "
    "book eye job word business issue side kind head house service friend father power hour game line end member law "
    "car city community name president team minute idea kid body information back parent face others level office "
    "door health person art war history party result change morning reason research girl guy moment air teacher force "
    "education quickly brown fox jumps over lazy dog splitter transformer hierarchical autoregressive byte"
).split()
_EN_CONTRACTIONS = "don't isn't it's we're they'll I'm you've can't won't shouldn't o'clock rock'n'roll".split()
_DE_WORDS = (
    "der die das und ist nicht ein eine zu mit sich auf für von dem den des im wir ich sie er es auch noch nach wie "
    "über größer schön Mädchen Straße Fußball Käse Bäcker Brötchen Grüße müssen können dürfen Übung Ärger Öl "
    "Gemütlichkeit Weltanschauung Schadenfreude Eichhörnchen Kindergarten Zeitgeist Rücksicht Frühstück "
    "Donaudampfschifffahrtsgesellschaft Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz "
    "Geschwindigkeitsbegrenzung Arbeitsunfähigkeitsbescheinigung heißt weiß groß Fuß süß bloß Maß Spaß"
).split()
_NAMES = ("HTTPServer XMLHttpRequest iPhone McDonald camelCase thisIsCamel getElementById parseJSON "
          "TFreeHAT LlamaForCausalLM snake_case_name __init__ HTML5 IPv6 macOS eBay JavaScript").split()
_ZH = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴"
_ZH_PUNCT = "，。！？：；、（）《》“”"
_JA = ("これは日本語の文章です。カタカナのコンピューターとテーブル、ひらがなとカンジ。東京タワーへ行きました！"
       "ラーメンを食べたい。プログラミング言語パイソン。")
_KO = "안녕하세요 세계 한국어 문장입니다 프로그래밍 언어 파이썬을 좋아합니다"
_OTHER_SCRIPTS = (
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Καλημέρα κόσμε· η γρήγορη καφέ αλεπού.",
    "مَرْحَبًا بِالْعَالَمِ، هَذَا نَصٌّ عَرَبِيٌّ.",
    "שָׁלוֹם עוֹלָם! צה״ל ו־ת״א, גימ׳ ו'ב",
    "नमस्ते दुनिया। हिन्दी में लिखा गया वाक्य।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "Tiếng Việt có dấu: Đây là một câu ví dụ.",
    "Ελληνικά ΑΒΓΔ αβγδ ΣΊΣΥΦΟΣ",
)
_EMOJI = ("😀 😂 🙂 👍 👍🏽 👋🏿 ❤️ ✨ 🔥 🎉 🚀 🇩🇪 🇺🇸 🇯🇵 🏳️‍🌈 🏴‍☠️ 👨‍👩‍👧 👩🏽‍💻 🧑‍🤝‍🧑 👁️‍🗨️ 1️⃣ #️⃣ ☺️ ✌🏻 🤷‍♀️ "
          "🐈‍⬛ 😶‍🌫️ ❤️‍🔥 🫶🏼 🏃🏾‍♂️‍➡️").split()
_PY = '''def getUserName(self, user_id: int) -> str:
    """Return the user's display name."""
    if user_id in self._cache:
        return self._cache[user_id]
    resp = requests.get(f"https://api.example.com/v1/users/{user_id}", timeout=3.5)
    data = resp.json()["data"]
    self._cache[user_id] = data.get("displayName", "n/a")
    return self._cache[user_id]
'''
_JS = '''const fetchData = async (url) => {
  const response = await fetch(url, { method: 'GET', headers: { 'Content-Type': 'application/json' } });
  if (!response.ok) { throw new Error(`HTTP ${response.status}`); }
  return response.json(); // parse JSON
};
let xmlHttpRequest = new XMLHttpRequest(); arr.map((x, i) => x * 2 + i).filter(Boolean);
'''
_C = '''#include <stdio.h>
int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; ++i) { printf("%s\\n", argv[i]); }
\treturn 0;
}
'''

# Random Unicode: blocks to draw from (first, last). Surrogates are excluded when drawing.
_BLOCKS = (
    (0x0000, 0x001F), (0x0020, 0x007E), (0x007F, 0x00FF), (0x0100, 0x024F), (0x0250, 0x02FF), (0x0300, 0x036F),
    (0x0370, 0x03FF), (0x0400, 0x04FF), (0x0530, 0x058F), (0x0590, 0x05FF), (0x0600, 0x06FF), (0x0700, 0x074F),
    (0x0780, 0x07BF), (0x0800, 0x08FF), (0x0900, 0x097F), (0x0980, 0x09FF), (0x0B00, 0x0B7F), (0x0C00, 0x0CFF),
    (0x0E00, 0x0E7F), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x10A0, 0x10FF), (0x1100, 0x11FF), (0x1200, 0x137F),
    (0x13A0, 0x13FF), (0x1680, 0x169F), (0x1780, 0x17FF), (0x1800, 0x18AF), (0x1AB0, 0x1AFF), (0x1C80, 0x1C8F),
    (0x1DC0, 0x1DFF), (0x1E00, 0x1EFF), (0x1F00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20CF),
    (0x20D0, 0x20FF), (0x2100, 0x214F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2300, 0x23FF), (0x2500, 0x257F),
    (0x2600, 0x26FF), (0x2700, 0x27BF), (0x2C00, 0x2C5F), (0x2E00, 0x2E7F), (0x3000, 0x303F), (0x3040, 0x309F),
    (0x30A0, 0x30FF), (0x3100, 0x312F), (0x4E00, 0x9FFF), (0xA640, 0xA69F), (0xA700, 0xA7FF), (0xA980, 0xA9DF),
    (0xAB30, 0xAB6F), (0xAC00, 0xD7AF), (0xE000, 0xF8FF), (0xF900, 0xFAFF), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F),
    (0xFE10, 0xFE6F), (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x10000, 0x1007F), (0x10900, 0x1097F),
    (0x10EC0, 0x10EFF), (0x11000, 0x1107F), (0x11B00, 0x11B6F), (0x11DB0, 0x11DEF), (0x12000, 0x123FF),
    (0x12400, 0x1254F), (0x12550, 0x1268F), (0x16EA0, 0x16EDF), (0x1B000, 0x1B16F), (0x1D100, 0x1D2FF),
    (0x1D400, 0x1D7FF), (0x1DF00, 0x1DFFF), (0x1E6C0, 0x1E6FF), (0x1E900, 0x1E95F), (0x1F000, 0x1F0FF),
    (0x1F100, 0x1F1FF), (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F700, 0x1F8FF),
    (0x1F900, 0x1FAFF), (0x1FB00, 0x1FBFF), (0x20000, 0x2A6DF), (0x2FFF0, 0x3134F), (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF), (0xF0000, 0xF00FF), (0x10FF00, 0x10FFFF),
)
# Chars around which UAX #29 is subtle: marks, format chars, ZWJ/ZWNJ, joiners, quotes, spaces.
_NASTY = (
    "a", "Z", "ß", "é", "1", "٣", "_", "'", '"', ".", ",", ":", ";", "-", "$", "‘", "’", "·", "\u0301", "\u0308",
    "\u20e3", "\u200d", "\u200c", "\u200b", "\u200e", "\u00ad", "\u2060", "\ufeff", "\ufe0f", "\U0001F3FD",
    "\U000E0061", " ", "  ", "\t", "\u00a0", "\u2007", "\u202f", "\u3000", "\u2044", "\n", "\r\n", "\r", "\u2028",
    "\u05d0", "\u05e9", "\u05f3", "\u05f4", "\u30a2", "\u30fc", "\u30a0", "\u3042", "中", "\u0e01", "\u0e31",
    "\U0001F1E9", "\U0001F1EA", "🙂", "👨", "ℹ", "\u2605", "\u00b8", "\u0295", "\u066b", "\u066c", "\u055a",
    "\U00010ED0", "\u2e60", "\U00016EA0", "\U00016EBB", "\u0b53", "\u1acf",
)


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


_NUMBER_FORMS = (
    lambda rng: "3.14159",
    lambda rng: f"{rng.randrange(1, 999)},{rng.randrange(1000):03d}",
    lambda rng: f"{rng.randrange(1, 9)}e-{rng.randrange(1, 12)}",
    lambda rng: f"-{rng.randrange(10**6)}",
    lambda rng: f"0x{rng.randrange(1 << 32):X}",
    lambda rng: f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
    lambda rng: f"{rng.randrange(24)}:{rng.randrange(60):02d}",
    lambda rng: f"{rng.randrange(100)}%",
    lambda rng: f"${rng.randrange(100)}.{rng.randrange(100):02d}",
    lambda rng: f"€{rng.randrange(100)},{rng.randrange(100):02d}",
    lambda rng: f"{rng.random():.6f}",
    lambda rng: str(rng.randrange(10 ** rng.randrange(1, 9))),
)


def _number(rng: random.Random) -> str:
    return _NUMBER_FORMS[rng.randrange(len(_NUMBER_FORMS))](rng)


def _sentence(rng: random.Random, words, contractions=()) -> str:
    out = []
    for i in range(rng.randrange(4, 18)):
        r = rng.random()
        if r < 0.06 and contractions:
            w = _pick(rng, contractions)
        elif r < 0.10:
            w = _number(rng)
        elif r < 0.13:
            w = _pick(rng, _NAMES)
        else:
            w = _pick(rng, words)
        if i == 0:
            w = w[:1].upper() + w[1:]
        if rng.random() < 0.08:
            w += _pick(rng, (",", ";", ":", " -", " —"))
        if rng.random() < 0.03:
            w = _pick(rng, ('"{}"', "({})", "„{}“", "'{}'", "«{}»", "[{}]")).format(w)
        out.append(w)
    return " ".join(out) + _pick(rng, (".", ".", ".", "!", "?", "...", "?!", ":"))


def _prose_en(rng):
    return " ".join(_sentence(rng, _EN_WORDS, _EN_CONTRACTIONS) for _ in range(rng.randrange(1, 6))) + _pick(rng, (" ", "\n", "\n\n"))


def _prose_de(rng):
    return " ".join(_sentence(rng, _DE_WORDS) for _ in range(rng.randrange(1, 6))) + _pick(rng, (" ", "\n", "\n\n"))


def _code(rng):
    text = _pick(rng, (_PY, _JS, _C))
    if rng.random() < 0.3:
        text = text.replace("\n", "\r\n")
    if rng.random() < 0.3:
        text = text.replace("    ", "\t")
    return text


def _cjk(rng):
    r = rng.random()
    if r < 0.5:
        return "".join(_pick(rng, _ZH) if rng.random() > 0.1 else _pick(rng, _ZH_PUNCT) for _ in range(rng.randrange(5, 60))) + "。"
    if r < 0.8:
        return _JA
    return _KO + _pick(rng, (" ", "。", "\n"))


def _scripts(rng):
    return _pick(rng, _OTHER_SCRIPTS) + _pick(rng, (" ", "\n"))


def _emoji(rng):
    return "".join(_pick(rng, _EMOJI) + _pick(rng, ("", " ", " ", "!", "\n", "a")) for _ in range(rng.randrange(1, 8)))


def _whitespace(rng):
    return _pick(rng, ("  ", "   ", "\t", "\t\t", " \t ", "\r\n", "\n\n\n", "\u00a0", "\u3000", "\u2009", "        ", " \n ", "\x0b", "\x0c", "\u2028"))


def _web(rng):
    user = _pick(rng, ("max.mustermann", "jane_doe", "info", "a.b-c+tag"))
    host = _pick(rng, ("example.com", "mail.uni-heidelberg.de", "aleph-alpha.com", "localhost:8080"))
    path = "/".join(_pick(rng, ("api", "v2", "users", "42", "index.html", "search?q=hat&lang=de", "%C3%BCber")) for _ in range(rng.randrange(1, 5)))
    return _pick(rng, (f"https://{host}/{path}", f"{user}@{host}", f"<{user}@{host}>", f"http://www.{host}/{path}#top")) + " "


def _long_word(rng):
    base = _pick(rng, ("Donaudampfschifffahrtsgesellschaftskapitän", "Überlänge", "Ångström", "ÄÖÜäöüß", "supercalifragilistic",
                       "Привет", "αβγδε", "अनुच्छेद", "مرحبا", "ab1", "x"))
    return " " + base * rng.randrange(3, 40) + _pick(rng, ("", ".", ",", " "))


def random_unicode(rng: random.Random, n_chars: int) -> str:
    """`n_chars` code points: mostly drawn from many Unicode blocks, some from a list of tricky chars."""
    out = []
    for _ in range(n_chars):
        if rng.random() < 0.4:
            out.append(_pick(rng, _NASTY))
            continue
        lo, hi = _pick(rng, _BLOCKS)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out)


def _random(rng):
    return random_unicode(rng, rng.randrange(1, 40)) + _pick(rng, ("", " ", "\n"))


KINDS: dict[str, tuple[float, Callable[[random.Random], str]]] = {
    "prose_en": (0.30, _prose_en),
    "prose_de": (0.22, _prose_de),
    "code": (0.12, _code),
    "cjk": (0.06, _cjk),
    "scripts": (0.06, _scripts),
    "emoji": (0.05, _emoji),
    "whitespace": (0.04, _whitespace),
    "web": (0.05, _web),
    "long_word": (0.03, _long_word),
    "random_unicode": (0.07, _random),
}


def mixed_text(n_bytes: int, seed: int = 0, kinds: tuple[str, ...] | None = None) -> str:
    """Deterministic mixed text of about `n_bytes` UTF-8 bytes (never fewer, at most one chunk more).

    Args:
        n_bytes (`int`): target size in UTF-8 bytes.
        seed (`int`): seed of the generator; the same seed gives the same text.
        kinds (`tuple[str, ...]`, *optional*): restrict to these keys of `KINDS` (default: all, weighted).
    """
    names = list(kinds) if kinds is not None else list(KINDS)
    unknown = [k for k in names if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    weights = [KINDS[k][0] for k in names]
    rng = random.Random(seed)
    parts = []
    size = 0
    while size < n_bytes:
        name = rng.choices(names, weights)[0]
        part = KINDS[name][1](rng)
        parts.append(part)
        size += len(part.encode("utf-8"))
    return "".join(parts)
