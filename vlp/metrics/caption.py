r"""COCO caption metrics with ``pycocoevalcap``'s semantics: BLEU-1..4, ROUGE-L, CIDEr-D (+ METEOR, SPICE).

The numbers come from ``pycocoevalcap`` itself (``Bleu(4)``, ``Rouge()``, ``Cider()``, and with Java
``Meteor()``, ``Spice()``), fed exactly what ``COCOEvalCap.evaluate`` feeds them, so they are the
leaderboard's numbers and on its scale:

- ``Bleu_1..Bleu_4``: corpus-level BLEU with the closest reference length, fractions in [0, 1];
- ``ROUGE_L``: mean over images of the LCS F-measure with beta = 1.2, in [0, 1];
- ``CIDEr``: CIDEr-D (n = 1..4, sigma = 6, clipped counts), *including* the formula's factor 10, so a
  good model scores ~1.2 here, printed as "120" in papers. Its document frequencies are taken from the
  references of the images being scored, so the score of an image depends on which other images are
  scored with it (a subset scores differently from the full set, as in pycocoevalcap);
- ``METEOR`` and ``SPICE``: only on the Java path (both are Java programs).

Every metric runs after the PTB tokenizer as pycocoevalcap configures it (Stanford CoreNLP 3.4.1
``PTBTokenizer -preserveLines -lowerCase``, then the tokens in its ``PUNCTUATIONS`` list are dropped),
which needs Java. Without Java, :func:`ptb_tokenize_python` stands in for the jar: a reimplementation of
its lexer (PTBLexer.flex of that release: longest match over the rules, ties to the earlier rule), which
was checked token for token against the 3.4.1 jar on ~100k generated captions and random strings. So
BLEU, ROUGE-L and CIDEr-D are pycocoevalcap's own scorers on the jar's tokens. Where it can still differ:

- ``\r``, ``\u2028``, ``\u2029``, ``\v`` and ``\f`` inside a caption are spaces here; the jar ends a
  line at each, which shifts every later caption onto the wrong image in pycocoevalcap;
- Unicode tables: letters are Python's (Unicode 15) against JFlex's of 2014, so a letter added to
  Unicode since then is a word character here and deleted by the jar (outside the BMP both delete);
- the jar's lexer takes the longest match of each rule (POSIX), Python's regexes the leftmost
  alternative; the rules are written so the two agree, but a pathological string (a long mix of
  digits, letters and ``.,-/@`` without spaces) may still split differently.

Quirks of the jar that are reproduced because they change scores: brackets become ``-lrb-``, ``-rsb-``,
... (lower-cased, so pycocoevalcap's upper-case ``-LRB-`` filter misses them and they stay tokens),
``!!`` and ``?!`` stay tokens, ``$5`` -> ``$ 5``, ``1 1/2`` is one token with a no-break space, known
abbreviations keep their period (``mr.``, ``st.``, ``e.g.``, ``u.s.``, single letters), ``gonna`` ->
``gon na``, ``cannot`` -> ``can not``, and an acronym loses its period when the *next* caption starts
like a sentence (``The``, ``A``, ``It`` ...) because the jar reads all captions as one text.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

try:  # the regex parser, only to find which characters each lexer rule can start with
    from re import _parser as _sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # Python 3.10

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

__all__ = [
    "PUNCTUATIONS",
    "caption_scores",
    "coco_references",
    "java_available",
    "load_caption_results",
    "ptb_tokenize_python",
    "ptb_tokens",
    "tokenize",
]

_PUNCTUATIONS = frozenset(PUNCTUATIONS)

# ---------------------------------------------------------------------------------------------------
# Pure-Python PTBTokenizer (CoreNLP 3.4.1, options "-preserveLines -lowerCase", default ptb3Escaping).
#
# Like JFlex, the lexer tries every rule at the current position, keeps the longest match (trailing
# context included) and breaks ties by rule order. The rule set is PTBLexer.flex of that era; where the
# 2014 jar differs from the published 2009 and 2017 grammars, the jar's observed behaviour was followed.
# ---------------------------------------------------------------------------------------------------

# Words that a plain ASCII word must not short-cut: their rules split them (cannot -> can not).
_ASSIMILATED = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})
_NEWLINE_LIKE = re.compile("[\r\u2028\u2029\u000b\u000c]")
# A plain ASCII word (+ one punctuation mark) before a space, a line end or the end: the common case,
# lexed without trying every rule. No rule matches longer there, except abbreviations before a period.
_FAST = re.compile(r"([A-Za-z]+)(?=[ \n]|\Z|[,;:!?.](?:[ \n]|\Z))")
_FAST_PUNCT = re.compile(r"(?:[,;:!?]|\.(?! \.))(?=[ \n]|\Z)")


# Words after which an acronym's period is also a sentence end (PTBLexer's ACRONYM lookahead).
# fmt: off
_SENTENCE_STARTS = (
    "About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Earlier", "He", "Her",
    "Here", "However", "If", "In", "It", "Last", "Many", "More", "Mr.", "Ms.", "Now", "Once", "One",
    "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Their", "Then", "There", "These",
    "They", "This", "We", "When", "While", "What", "Yet", "You",
)
# fmt: on


def _bmp_class(predicate: Callable[[str], bool]) -> str:
    """Character-class body (ranges) of the BMP code points accepted by ``predicate``."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF or not predicate(chr(cp)):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


def _ci(words: str) -> str:
    """A caseless piece. JFlex's %caseless covers literal text but never character classes, so patterns
    are compiled case-sensitive and only literal words are wrapped in this."""
    return f"(?i:{words})"


def _cap(word: str) -> str:
    """``[W]ord`` in the grammar: the first letter is a class (case-sensitive), the rest caseless."""
    return f"(?-i:{word[0]}){_ci(word[1:])}"


def _name(constant: Any) -> str:
    """The name of a regex-parser opcode (its ``str`` is a number on some Python versions)."""
    return getattr(constant, "name", str(constant))


def _first_chars(items: Any, icase: bool) -> tuple[list[Callable[[str], bool]], bool]:
    """Tests covering the characters a parsed regex can start with, and whether it can match empty.

    Only used to skip rules that cannot match at a character, so anything unexpected answers "any".
    """
    tests: list[Callable[[str], bool]] = []
    for op, av in items:
        name = _name(op)
        nullable = False
        if name == "LITERAL":
            lit = chr(av)
            tests.append(
                (lambda c, lit=lit: c.lower() == lit.lower()) if icase else (lambda c, lit=lit: c == lit)
            )
        elif name == "IN" and all(_name(o) in ("LITERAL", "RANGE", "CATEGORY") for o, _ in av):
            spans = [(a, a) if _name(o) == "LITERAL" else a for o, a in av if _name(o) != "CATEGORY"]
            cats = {_name(a) for o, a in av if _name(o) == "CATEGORY"}
            if cats - {"CATEGORY_DIGIT", "CATEGORY_SPACE"}:
                tests.append(lambda c: True)
            else:
                tests.append(
                    lambda c, spans=spans, cats=cats, icase=icase: any(
                        any(lo <= ord(x) <= hi for lo, hi in spans)
                        or ("CATEGORY_DIGIT" in cats and x.isdecimal())
                        or ("CATEGORY_SPACE" in cats and x.isspace())
                        for x in ({c, c.lower(), c.upper()} if icase else (c,))
                        if len(x) == 1
                    )
                )
        elif name == "SUBPATTERN":
            _, add, remove, sub = av
            sub_icase = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            sub_tests, nullable = _first_chars(sub, sub_icase)
            tests += sub_tests
        elif name == "BRANCH":
            nullable = False
            for branch in av[1]:
                sub_tests, sub_nullable = _first_chars(branch, icase)
                tests += sub_tests
                nullable = nullable or sub_nullable
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, sub = av
            sub_tests, nullable = _first_chars(sub, icase)
            tests += sub_tests
            nullable = nullable or low == 0
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            nullable = True  # zero-width: constrains nothing here
        else:  # NOT_LITERAL, ANY, negated or Unicode classes...: any character
            tests.append(lambda c: True)
        if not nullable:
            return tests, False
    return tests, True


def _first_char_test(pattern: str) -> Callable[[str], bool]:
    try:
        tests, nullable = _first_chars(_sre_parse.parse(pattern).data, False)
    except (AttributeError, TypeError, ValueError, re.error):
        return lambda c: True
    return (lambda c: True) if nullable else (lambda c: any(t(c) for t in tests))


class _Grammar(NamedTuple):
    rules: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...]  # JFlex priority order
    abbreviation: re.Pattern[str]  # words that keep their period (ABBREV1/2/3, ACRO)
    by_first_char: dict[str, tuple[tuple[str, re.Pattern[str]], ...]]  # filled lazily

    def candidates(self, ch: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
        """The (action, pattern) pairs that can match at a character ``ch``, in priority order."""
        found = self.by_first_char.get(ch)
        if found is None:
            found = tuple((action, pattern) for action, pattern, can_start in self.rules if can_start(ch))
            self.by_first_char[ch] = found
        return found


@lru_cache(maxsize=1)
def _grammar() -> _Grammar:
    """The lexer rules; in each pattern, group ``t`` is the token and the rest is trailing context."""
    letter_chars = _bmp_class(lambda c: unicodedata.category(c)[0] == "L")  # JFlex [:letter:]
    mark_chars = _bmp_class(lambda c: unicodedata.category(c) in ("Mn", "Mc"))
    uppers = _bmp_class(lambda c: unicodedata.category(c) == "Lu")
    L = f"[{letter_chars}]"
    LD = f"[{letter_chars}\\d]"
    D = r"\d"
    # PTBLexer's LETTER (used by WORD and hashtags) also takes combining marks, soft hyphens and &eacute;
    splet = f"&[aeiouAEIOU]{_ci('acute|grave|uml')};"
    word_l = f"(?:[{letter_chars}{mark_chars}\u00ad]|{splet})"
    word_ld = f"(?:[{letter_chars}{mark_chars}\u00ad\\d]|{splet})"
    apos = f"(?:['\u0092\u2019]|{_ci('&apos;')})"
    apos_etc = f"(?:['`\u0091\u0092\u2018\u2019\u201b]|{_ci('&apos;')})"
    space = "[ \t\u00a0\u2000-\u200a\u3000]"
    spacenl = "[ \t\u00a0\u2000-\u200a\u3000\n]"
    sgml = (
        r"<(?:[!?][A-Za-z\-][^>\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*"
        r"(?:[ ]*=[ ]*(?:'[^'\n]*'|\"[^\"\n]*\"))?))*[ ]*/?"
        r"|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"
    )
    word = f"{word_l}{word_ld}*(?:[.!?]{word_l}{word_ld}*)*"
    redaux = f"{apos}(?:[msdMSD]|{_ci('re|ve|ll')})"
    sword = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
    sredaux = f"[nN]{apos_etc}[tT]"
    num_sep = f"{D}*(?:[.:,\u00ad\u066b\u066c]{D}+)+"
    number = f"[-+]?(?:{num_sep}|{D}+)"
    hyphen = "[-_\u058a\u2010\u2011]"
    thing_part = f"(?:[dDoOlL]{apos_etc}{LD})?{LD}+"
    thing = f"{thing_part}(?:{hyphen}{thing_part})*"
    thinga = f"[A-Z]+(?:(?:[+&]|{_ci('&amp;')})[A-Z]+)+"
    acro_special = _ci(r"(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R)")
    acro = [r"[A-Za-z](?:\.[A-Za-z])*", acro_special]
    acro2 = f"(?:[A-Za-z](?:\\.[A-Za-z])+|{acro_special})"
    hthing = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{acro2}\\.|[A-Za-z0-9\u00ad]+))+"
    abbrev1 = _ci(
        "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec|Mon|Tues|Tue|Wed|Thurs|Thu|Fri"
        f"|Ala|Ariz|{_cap('Az')}|{_cap('Ark')}|Calif|Colo|Conn|Ct|Dak|{_cap('Del')}|Fla|Ga|{_cap('Ill')}|Ind"
        f"|Kans?|Ky|{_cap('La')}|{_cap('Mass')}|Md|Mich|Minn|{_cap('Miss')}|Mo|Mont|Neb|Nev|Okla|{_cap('Ore')}"
        f"|{_cap('Pa')}|Penn|Tenn|{_cap('Tex')}|Va|Vt|{_cap('Wash')}|Wisc?|Wyo"
        f"|Inc|Cos?|Corp|Pp?t(?-i:[ye])s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
        r"|tel|est|ext|sq|Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq|etc|al|seq|Bldg"
    )
    abbrev4 = [
        _ci(
            f"Mr|Mrs|Ms|{_cap('Miss')}|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt"
            "|Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Rt|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst"
            r"|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc|vs|(?-i:v)|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph"
            "|Invt|Elec|Natl|M(?-i:[ft])g|Dept|Ave"
        ),
        *acro,
    ]
    sentence_starts = "|".join(_cap(w) for w in _SENTENCE_STARTS).replace(".", r"\.")
    apoword = [
        f"{apos}[nN]{apos}?",
        f"[lLdDjJ]{apos}",
        f"{_ci('Dunkin|somethin|ol')}{apos}",
        f"{apos}{_ci('em|till?|cause|[2-9]0s')}",
        f"[A-HJ-XZn]{apos_etc}{L}{{2,}}",
        f"{L}+[aeiouyAEIOUY]{apos_etc}[aeiouA-Z]{L}*",
        _ci(r"cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"),
        f"{_ci('o')}{apos_etc}{_ci('o')}",
    ]
    full_url = f'{_ci("https?")}://[^ \t\n\f\r"<>|()]+[^ \t\n\f\r"<>|.!?(){{}},-]'
    likely_url = (
        f'(?:(?:{_ci("www")}\\.(?:[^ \t\n\f\r"<>|.!?(){{}},]+\\.)+[a-zA-Z]{{2,4}})'
        f"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){{}},-_$]+\\.)+{_ci('com|net|org|edu')}))"
        '(?:/[^ \t\n\f\r"<>|()]+[^ \t\n\f\r"<>|.!?(){},-])?'
    )
    email = (
        f'(?:{_ci("&lt;")}|<)?[a-zA-Z0-9][^ \t\n\f\r"<>|()\u00a0{{}}]*@(?:[^ \t\n\f\r"<>|(){{}}.\u00a0]+\\.)*'
        f'[^ \t\n\f\r"<>|(){{}}.\u00a0]+(?:{_ci("&gt;")}|>)?'
    )
    phone = (
        r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00a0])?[0-9]{2,4}[\- \u00a0])"
        r"[0-9]{3,4}[\- \u00a0]?[0-9]{3,5}"
    )
    misc_symbol = (
        "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7\u0387"
        "\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a"
        "\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2025\u2030-\u2038"
        "\u203b\u203c\u2043\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff"
        "\u2200-\u2bff\u3001-\u3006\u3008-\u3020\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
    )
    filename_ext = _ci(
        "bat|bmp|class|cgi|cpp|c|dll|docx|doc|exe|gif|gz|html|htm|h|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png"
        "|ppt|ps|py|sql|tar|txt|wav|xml|x|zip"
    )
    quote_chars = (
        "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]"
    )
    amp = _ci("&amp;")
    table: list[tuple[str, list[str]]] = [
        ("emit", [f"(?P<t>{_ci('c')}\\+\\+|{_ci('c|f')}#)"]),
        ("assim3", [f"(?P<t>{_ci('cannot')}|'{_ci('twas')})"]),
        ("assim2", [f"(?P<t>'{_ci('tis')}|{_ci('gonna|gotta|lemme|gimme|wanna')})"]),
        ("sgml", [f"(?P<t>{sgml})"]),
        ("dash", [f"(?P<t>&{_ci('MD|mdash|ndash')};|[\u0096\u0097\u2013\u2014\u2015])"]),
        ("amp", [f"(?P<t>{amp})"]),
        ("emit", [f"(?P<t>&{_ci('HT|TL|UR|LR|QC|QL|QR|odq|cdq')};|&#[0-9]+;)"]),
        ("word", [f"(?P<t>{word}){redaux}"]),
        ("word", [f"(?P<t>{sword}){sredaux}"]),
        ("word", [f"(?P<t>{word})"]),
        ("emit", [f"(?P<t>{p})" for p in apoword]),
        ("emit", [f"(?P<t>[yY]{apos}){L}"]),
        ("emit", [f"(?P<t>{full_url})", f"(?P<t>{likely_url})"]),
        ("emit", [f"(?P<t>{email})"]),
        ("emit", [r"(?P<t>[@\uff20][a-zA-Z_][a-zA-Z_0-9]*)", f"(?P<t>[#\uff03]{word_l}+)"]),
        ("right_quote", [f"(?P<t>{redaux})[^A-Za-z]", f"(?P<t>{sredaux})[^A-Za-z]"]),
        ("emit", [f"(?P<t>{D}{{1,2}}[-/]{D}{{1,2}}[-/]{D}{{2,4}})"]),
        ("word", [f"(?P<t>{number})"]),
        (
            "emit",
            [
                "(?P<t>[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+))"
            ],
        ),
        ("frac", [f"(?P<t>(?:{D}{{1,4}}[- \u00a0])?{D}{{1,4}}(?:\\\\?/|\u2044){D}{{1,4}})"]),
        ("frac2", ["(?P<t>[\u00bc\u00bd\u00be\u2153-\u215e])"]),
        (
            "amp",
            [
                "(?P<t>"
                + _ci("-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls")
                + f"|{_ci('Cap')}{apos}{_ci('n')}|{_ci('c')}{apos}{_ci('est')})"
            ],
        ),
        ("emit", [r"(?P<t>[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2})"]),
        ("emit", [r"(?P<t>[A-Z]*\$|#)"]),
        (
            "currency",
            ["(?P<t>[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6])"],
        ),
        ("acronym", [f"(?P<t>(?:{a})\\.){spacenl}+(?:{sentence_starts}){spacenl}" for a in acro]),
        ("emit", [f"(?P<t>{_ci('ca|figs?|prop|nos?|art|bldg|pp|op')}\\.){spacenl}?{D}"]),
        ("emit", [f"(?P<t>{_ci('So|No')}\\.){spacenl}+{_ci('Africa|Korea|Cal')}"]),
        ("emit", [f"(?P<t>(?:{_ci('pt')}[eyEY]|{_ci('co')})\\.){space}{_ci('ltd|lim')}"]),
        ("abbrev1", [f"(?P<t>{abbrev1}\\.){spacenl}(?:{spacenl}|[{uppers}]|{sgml})"]),
        ("emit", [f"(?P<t>{abbrev1}\\.)[\\s\\S][\\s\\S]"]),
        ("abbrev1", [f"(?P<t>{abbrev1}\\.)"]),
        ("emit", [f"(?P<t>{a}\\.)" for a in abbrev4]),
        ("emit", [f"(?P<t>{a}){space}" for a in abbrev4]),
        ("emit", [f"(?P<t>{a}){spacenl}" for a in acro]),
        ("emit", [f"(?P<t>{apos}[0-9][0-9]){spacenl}"]),
        ("emit", [f"(?P<t>{word_ld}+(?:\\.{word_ld}+)*\\.{filename_ext})(?:{spacenl}|[.?!,])"]),
        ("word", [f"(?P<t>{word}\\.)[,;:\u3001]"]),
        (
            "phone",
            [f"(?P<t>{phone})", r"(?P<t>(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5})"],
        ),
        ("left_quote", [f'(?P<t>"|{_ci("&quot;")})[A-Za-z0-9$]']),
        ("right_quote", [f'(?P<t>"|{_ci("&quot;")})']),
        ("skip", ["(?P<t>\u007f)"]),
        ("emit_lt", [f"(?P<t><|{_ci('&lt;')})"]),
        ("emit_gt", [f"(?P<t>>|{_ci('&gt;')})"]),
        ("smiley", ["(?P<t>[<>]?[:;=][\\-o*']?[()DPdpO\\\\{@|\\[\\]])[^A-Za-z0-9]"]),
        (
            "smiley",
            [
                r"(?P<t>[\^x=~<>]\.\[\^x=~<>])",  # sic: the grammar's "\[" makes this need a literal "["
                r"(?P<t>[\-\^x=~<>']_[\-\^x=~<>'])",
                r"(?P<t>\([\-\^x=~<>'][_.]?[\-\^x=~<>']\))",
                r"(?P<t>\([\^x=~<>']-[\^x=~<>'`]\))",
            ],
        ),
        ("bracket", [r"(?P<t>[{}\[\]()])"]),
        ("hyphens", [r"(?P<t>-+)"]),
        ("ellipsis", ["(?P<t>\\.{3,5}|[\u0085\u2026])", "(?P<t>(?:\\.[ \u00a0]){2,4}\\.)"]),
        ("emit", [r"(?P<t>@+|#+|_+)"]),
        ("emit", [r"(?P<t>\*+|(?:\\\*){1,3})"]),
        ("emit", ["(?P<t>[,;:\u3001])"]),
        ("emit", [r"(?P<t>[?!]+)"]),
        ("emit", ["(?P<t>[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002])"]),
        ("emit", ["(?P<t>=)"]),
        ("emit", ["(?P<t>/)"]),
        ("word", [f"(?P<t>{hthing}\\.)[,;:\u3001]", f"(?P<t>{hthing})"]),
        ("emit", [f"(?P<t>{thing}\\.)[,;:\u3001]", f"(?P<t>{thing})"]),
        ("amp", [f"(?P<t>{thinga}\\.)[,;:\u3001]", f"(?P<t>{thinga})"]),
        ("left_quote", [r"(?P<t>')[A-Za-z][^ \t\n\r\u00a0]"]),
        (
            "right_quote",
            [
                f"(?P<t>{redaux})",
                f"(?P<t>{sredaux})",
                f"(?P<t>{apos})",
                "(?P<t>'')",
                f"(?P<t>{quote_chars}{{1,2}})",
            ],
        ),
        ("emit", ["(?P<t><<|>>)"]),
        ("emit", [f"(?P<t>{misc_symbol})"]),
        (
            "skip",
            [f"(?P<t>\u0000|[ \t\u00a0\u2000-\u200a\u3000]+|[\u200b\u200e\u200f\ufeff]|{_ci('&nbsp;')})"],
        ),
    ]
    rules = tuple(
        (action, re.compile(p), _first_char_test(p)) for action, patterns in table for p in patterns
    )
    abbrev3 = _ci("ca|figs?|prop|nos?|art|bldg|pp|op|So|No|co") + f"|{_ci('pt')}[eyEY]"
    abbreviation = re.compile(f"(?:{abbrev1}|{abbrev4[0]}|[A-Za-z]|{abbrev3})\\.")
    return _Grammar(rules, abbreviation, {})


_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}


def _latex_quotes(tok: str, left: bool) -> str:
    """PTBLexer.latexQuotes: straight quotes by position, curly ones by shape."""
    tok = re.sub(r"&apos;|'", "`" if left else "'", tok)
    tok = re.sub(r'"|&quot;', "``" if left else "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _apply(action: str, tok: str) -> tuple[str | None, int]:
    """The token a rule emits (None: nothing) and how many characters it consumes (JFlex pushback)."""
    if action == "word":  # soft hyphens are dropped; a word of nothing else becomes a hyphen
        return tok.replace("\u00ad", "") or "-", len(tok)
    if action == "emit":
        return tok, len(tok)
    if action == "skip":
        return None, len(tok)
    if action in ("assim3", "assim2"):  # cannot -> can not, gonna -> gon na
        cut = 3 if action == "assim3" else 2
        return tok[:-cut], len(tok) - cut
    if action == "abbrev1":  # "etc." then the period again, as a sentence end
        return tok, len(tok) - 1
    if action == "acronym":  # "U.S." + "." before a likely sentence start; "A." -> "A" + "."
        return (tok[:-1], 1) if len(tok) == 2 else (tok, len(tok) - 1)
    if action in ("left_quote", "right_quote"):
        return _latex_quotes(tok, action == "left_quote"), len(tok)
    if action == "amp":
        return re.sub("(?i)&amp;", "&", tok), len(tok)
    if action == "dash":
        return "--", len(tok)
    if action == "hyphens":
        return ("--" if 3 <= len(tok) <= 4 else tok), len(tok)
    if action == "ellipsis":
        return "...", len(tok)
    if action == "bracket":
        return _BRACKETS[tok], len(tok)
    if action in ("smiley", "phone"):
        out = tok.replace("(", "-LRB-").replace(")", "-RRB-")
        return (out.replace(" ", "\u00a0") if action == "phone" else out), len(tok)
    if action == "sgml":
        return re.sub("[ \r\n]", "\u00a0", tok), len(tok)
    if action == "frac":
        return tok.replace(" ", "\u00a0"), len(tok)
    if action == "frac2":
        return _FRACTIONS.get(tok, tok), len(tok)
    if action == "currency":
        return _CURRENCY.get(tok, tok), len(tok)
    if action == "emit_lt":
        return "<", len(tok)
    if action == "emit_gt":
        return ">", len(tok)
    raise AssertionError(f"unknown lexer action {action!r}")


def _lex_lines(text: str) -> list[list[str]]:
    """Tokens of each ``\\n``-separated line of ``text``, lexed as one stream like the jar does."""
    grammar = _grammar()
    lines: list[list[str]] = [[]]
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch == "\n":
            lines.append([])
            pos += 1
            continue
        if ch == " ":
            pos += 1
            continue
        fast = _FAST.match(text, pos) if ch.isascii() and ch.isalpha() else None
        if fast is not None:
            word = fast.group(1)
            after = text[fast.end(1) : fast.end(1) + 1]
            if word.lower() not in _ASSIMILATED and not (
                after == "." and grammar.abbreviation.fullmatch(word + ".") is not None
            ):
                lines[-1].append(word)
                pos = fast.end(1)
                continue
        elif _FAST_PUNCT.match(text, pos) is not None:
            lines[-1].append(ch)
            pos += 1
            continue
        best_len, best = 0, None
        for action, pattern in grammar.candidates(ch):
            m = pattern.match(text, pos)
            if m is not None and m.end() - pos > best_len:
                best_len, best = m.end() - pos, (action, m.group("t"))
        if best is None:
            pos += 1  # untokenizable: the jar deletes it (and logs a warning)
            continue
        tok, consumed = _apply(*best)
        if tok:
            lines[-1].append(tok)
        pos += consumed
    return lines


def ptb_tokens(texts: Sequence[str]) -> list[list[str]]:
    """PTB tokens of each text, lower-cased, *before* pycocoevalcap drops its punctuation tokens.

    The texts are lexed as one newline-joined stream because that is what the jar sees: a rule's
    trailing context may look into the next caption (``"the letter a."`` keeps ``a.`` unless the next
    caption starts with ``The``, ``A``, ``It`` ...).
    """
    texts = list(texts)
    if not texts:
        return []
    # pycocoevalcap replaces "\n"; the other line breaks would split the jar's lines (see module doc)
    lines = [_NEWLINE_LIKE.sub(" ", t.replace("\n", " ")) for t in texts]
    tokens = _lex_lines("\n".join(lines))
    assert len(tokens) == len(texts), (len(tokens), len(texts))
    return [[tok.lower() for tok in line] for line in tokens]


def ptb_tokenize_python(texts: Sequence[str]) -> list[str]:
    """What pycocoevalcap's ``PTBTokenizer`` makes of each text, without Java: space-joined tokens."""
    return [" ".join(t for t in line if t not in _PUNCTUATIONS) for line in ptb_tokens(texts)]


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


def java_available() -> bool:
    """Whether pycocoevalcap's Java parts (PTBTokenizer, METEOR, SPICE) can run here."""
    return shutil.which("java") is not None


def _use_java(use_java: bool | None) -> bool:
    if use_java is None:
        return java_available()
    if use_java and not java_available():
        raise ValueError("use_java=True but no `java` on PATH: install a JRE, or pass use_java=False")
    return bool(use_java)


def tokenize(captions: Mapping[int, Sequence[str]], use_java: bool | None = None) -> dict[int, list[str]]:
    """PTB-tokenize ``{image_id: [caption, ...]}`` as ``COCOEvalCap`` does (one jar run per call).

    ``use_java=None`` uses the jar when ``java`` is on PATH, else :func:`ptb_tokenize_python`. The order
    of images and captions is kept: it is the order the jar reads them in, which can matter (see
    :func:`ptb_tokens`).
    """
    flat = [(image_id, caption) for image_id, caps in captions.items() for caption in caps]
    if _use_java(use_java):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        out = PTBTokenizer().tokenize({i: [{"caption": c} for c in caps] for i, caps in captions.items()})
        return {image_id: list(out.get(image_id, [])) for image_id in captions}
    tokenized: dict[int, list[str]] = {image_id: [] for image_id in captions}
    for (image_id, _), line in zip(flat, ptb_tokenize_python([c for _, c in flat]), strict=True):
        tokenized[image_id].append(line)
    return tokenized


def _check_inputs(
    results: Sequence[Mapping[str, Any]], references: Mapping[int, Sequence[str]]
) -> dict[int, str]:
    """One caption per referenced image, nothing else; errors say which image and how to fix it."""
    if not references:
        raise ValueError("references is empty: nothing to score")
    for image_id, refs in references.items():
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{image_id!r}] must be a non-empty list of str, got {refs!r}")
    predictions: dict[int, str] = {}
    for row in results:
        if "image_id" not in row or not isinstance(row.get("caption"), str):
            raise ValueError(f"result {row!r} needs an 'image_id' and a str 'caption'")
        image_id = row["image_id"]
        if image_id in predictions:
            raise ValueError(
                f"image_id {image_id!r} appears twice in results: give exactly one caption per image"
            )
        if image_id not in references:
            raise ValueError(
                f"result for image_id {image_id!r}, which has no references: drop it or add references"
            )
        predictions[image_id] = row["caption"]
    missing = [i for i in references if i not in predictions]
    if missing:
        raise ValueError(
            f"results miss {len(missing)} of {len(references)} referenced images (first: image_id"
            f" {missing[0]!r}): every image in references needs one caption"
        )
    return predictions


def _stop_meteor(meteor: Any) -> None:
    """Stop METEOR's jar now; pycocoevalcap's ``__del__`` would, but leaves its output pipes open."""
    process = meteor.meteor_p
    with meteor.lock:
        process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _spice_models_present() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use."""
    import pycocoevalcap.spice.spice as spice_module

    return (Path(spice_module.__file__).parent / "lib" / "stanford-corenlp-3.6.0.jar").exists()


def caption_scores(
    results: Sequence[Mapping[str, Any]],
    references: Mapping[int, Sequence[str]],
    use_java: bool | None = None,
    spice: bool | None = None,
) -> dict[str, float]:
    """pycocoevalcap's ``COCOEvalCap.eval`` for ``results`` ``[{"image_id", "caption"}]`` against
    ``references`` ``{image_id: [raw caption, ...]}`` (e.g. from :func:`coco_references`).

    Returns ``Bleu_1..Bleu_4``, ``ROUGE_L`` and ``CIDEr`` as pycocoevalcap reports them (fractions; CIDEr
    already x10, see the module docstring); with Java also ``METEOR`` and ``SPICE``. The scored images
    are exactly the keys of ``references`` and define CIDEr-D's document frequencies. To reproduce a
    ``COCOEvalCap`` run bit for bit, give the images in its order (``params["image_id"]``).

    ``use_java=None``: use Java when ``java`` is on PATH. ``spice=None``: compute SPICE on the Java path
    only if its Stanford models are installed (pycocoevalcap would otherwise download ~1 GB); ``True``
    lets pycocoevalcap download them, ``False`` skips SPICE.
    """
    predictions = _check_inputs(results, references)
    java = _use_java(use_java)
    gts = tokenize(references, use_java=java)
    res = tokenize({image_id: [predictions[image_id]] for image_id in references}, use_java=java)

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)})
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        finally:
            _stop_meteor(meteor)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if java and spice is not False:
        if spice or _spice_models_present():
            from pycocoevalcap.spice.spice import Spice

            scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
        else:
            warnings.warn(
                "SPICE skipped: its Stanford CoreNLP models are not installed (pass spice=True to let"
                " pycocoevalcap download them)",
                stacklevel=2,
            )
    return scores


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def load_caption_results(path: str | Path) -> list[dict[str, Any]]:
    """A COCO caption results file ``[{"image_id": int, "caption": str}, ...]`` (extra keys dropped)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of {{'image_id', 'caption'}}, got {type(data).__name__}"
        )
    rows = []
    for k, row in enumerate(data):
        if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("caption"), str):
            raise ValueError(f"{path}: entry {k} is {row!r}, expected {{'image_id': int, 'caption': str}}")
        rows.append({"image_id": row["image_id"], "caption": row["caption"]})
    return rows


def coco_references(captions_json_path: str | Path) -> dict[int, list[str]]:
    """``{image_id: [caption, ...]}`` from an official ``captions_<split>.json`` (images + annotations).

    Images come in the file's ``images`` order (``COCO.getImgIds()``'s order, which ``COCOEvalCap``
    scores in) and captions in ``annotations`` order; images without any annotation are left out, since
    they cannot be scored.
    """
    data = json.loads(Path(captions_json_path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{captions_json_path}: not a COCO captions file (needs 'images' and 'annotations')")
    refs: dict[int, list[str]] = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in refs:
            raise ValueError(
                f"{captions_json_path}: annotation {ann.get('id')!r} names unknown image {ann['image_id']!r}"
            )
        refs[ann["image_id"]].append(ann["caption"])
    return {image_id: caps for image_id, caps in refs.items() if caps}
