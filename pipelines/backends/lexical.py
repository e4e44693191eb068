"""`lexical` object extraction: verb and noun-phrase rules over the instruction text.

"put the red mug in the blue bowl" -> object "red mug", target "blue bowl". Colour and
material words are kept (they are what tells two mugs apart); articles, quantities and
politeness are dropped. Works on the imperative instructions robot datasets use; the
Qwen3 backend handles free-form language.
"""

from __future__ import annotations

import re

from pipelines.backends.protocols import ObjectPhrase

VERSION = "1"

# verb (possibly multi-word) -> how its first noun phrase relates to the action
VERBS = [
    "pick up", "pick", "grab", "grasp", "take out", "take", "lift up", "lift", "hold", "move", "put down", "put",
    "place", "set", "push", "pull", "slide", "drag", "drop", "stack", "insert", "hang", "flip", "turn over",
    "turn on", "turn off", "turn", "rotate", "open", "close", "shut", "wipe", "clean", "fold", "unfold",
    "pour", "press", "remove", "get", "bring", "throw", "toss", "unstack", "uncover", "cover", "knock over",
    "straighten", "reposition", "transfer", "relocate", "shake", "stir", "squeeze", "plug", "unplug", "fetch",
    "collect", "carry", "switch on", "switch off", "put away", "empty", "fill", "sweep", "scoop", "pack", "unpack",
]
_VERB_RE = "|".join(sorted((re.escape(v) for v in VERBS), key=len, reverse=True))

# words that end the object's noun phrase and may start the target's
PREPS = [
    "into", "onto", "in", "on", "to", "from", "inside", "under", "underneath", "off", "out of", "out", "with",
    "near", "beside", "by", "towards", "toward", "at", "over", "behind", "next to", "on top of", "in front of",
    "to the left of", "to the right of", "left of", "right of", "across", "through", "between", "above",
    "below", "around", "back", "and", "then", "so", "until", "up", "down", "away", "forward", "backward",
    "closer", "upright", "aside", "so that", "while", "using", "upside down", "sideways",
]
_PREP_RE = "|".join(sorted((re.escape(p) for p in PREPS), key=len, reverse=True))

DETERMINERS = {"the", "a", "an", "some", "that", "this", "these", "those", "its", "his", "her", "their", "one", "all", "any", "each"}
PRONOUNS = {"it", "them", "that", "this", "one", "they"}
SUBSTANCES = {"water", "coffee", "tea", "juice", "milk", "rice", "beans", "sauce", "liquid", "contents"}
# target-introducing phrases; the target is the noun phrase after them
TARGET_PREPS = [
    "on top of", "in front of", "to the left of", "to the right of", "left of", "right of", "next to",
    "into", "onto", "inside of", "inside", "in", "on", "to", "near", "beside", "by", "towards", "toward",
    "behind", "under", "underneath", "over", "above", "below", "between", "at",
]
_TARGET_RE = "|".join(sorted((re.escape(p) for p in TARGET_PREPS), key=len, reverse=True))
# not objects: where, how and filler
NON_OBJECTS = {"left", "right", "side", "top", "bottom", "front", "back", "middle", "center", "centre", "there",
               "here", "place", "position", "surface", "counter", "area", "spot", "location", "way", "end"}
SOURCE_CONTAINERS = {"from", "out of", "off"}
TOOL_VERBS = {"wipe", "clean", "sweep", "stir", "scoop", "press", "push", "flip", "cut", "scrape", "spread", "hit", "tap", "poke"}


def _clean(text: str) -> str:
    t = text.lower().replace("’", "'")
    t = re.sub(r"[^a-z0-9'\- ,;.]", " ", t)
    t = re.sub(r"\b(please|carefully|gently|slowly|quickly|then|now|robot|can you|could you|you should)\b", " ", t)
    return re.sub(r"\s+", " ", t).strip(" .")


def _noun_phrase(words: list[str]) -> str | None:
    """Strip determiners and trailing fillers from a candidate noun phrase."""
    ws = [w for w in words if w]
    while ws and (ws[0] in DETERMINERS or ws[0].isdigit() or ws[0] in ("of",)):
        ws = ws[1:]
    while ws and ws[-1] in ("of", "the", "a", "an", "it"):
        ws = ws[:-1]
    if not ws or (len(ws) == 1 and (ws[0] in PRONOUNS or ws[0] in NON_OBJECTS)):
        return None
    phrase = " ".join(ws)
    return phrase or None


def _phrase_after(text: str, start: int) -> tuple[str | None, int]:
    """The noun phrase starting at `start`, ending at the next preposition/conjunction."""
    rest = text[start:].strip()
    m = re.search(rf"(?:^|\s)(?:{_PREP_RE})(?=\s|$)|[,;.]", " " + rest + " ")
    chunk = (" " + rest + " ")[: m.start()] if m else rest
    offset = start + (len(text[start:]) - len(text[start:].lstrip())) + (m.start() - 1 if m else len(rest))
    return _noun_phrase(chunk.split()), offset


def extract_one(text: str) -> ObjectPhrase:
    t = _clean(text)
    # the first clause holding a manipulation verb names the object
    clauses = [c.strip() for c in re.split(r"[;,.]| and then | after that ", t) if c.strip()]
    for clause in clauses or [t]:
        m = re.search(rf"(?:^|\s)({_VERB_RE})(?=\s|$)", clause)
        if not m:
            continue
        verb = m.group(1)
        obj, end = _phrase_after(clause, m.end())
        rest = clause[end:]
        # "pour water from the cup": the vessel is what is manipulated
        if obj and obj.split()[-1] in SUBSTANCES:
            src = re.search(r"(?:from|out of)\s+(.*)", rest)
            if src:
                vessel, _ = _phrase_after(src.group(1), 0)
                if vessel:
                    obj, rest = vessel, src.group(1)
        # "wipe the table with the towel": the tool in the hand is what is manipulated
        tool = re.search(r"(?:^|\s)(?:with|using)\s+(.*)", rest)
        if verb in TOOL_VERBS and tool:
            held, _ = _phrase_after(tool.group(1), 0)
            if held:
                return ObjectPhrase(held, obj)
        if obj is None:
            continue
        target = _target(rest, obj)
        if target is None:  # "pick up the mug and put it in the bowl": look in later clauses
            later = t[t.find(clause) + len(clause) :]
            target = _target(later, obj)
        return ObjectPhrase(obj, target)
    # no verb: a bare noun phrase ("red mug to the left")
    obj, end = _phrase_after(t, 0)
    return ObjectPhrase(obj, _target(t[end:], obj) if obj else None)


def _target(rest: str, obj: str) -> str | None:
    for m in re.finditer(rf"(?:^|\s)({_TARGET_RE})\s+", " " + rest):
        prep = m.group(1)
        phrase, _ = _phrase_after(" " + rest, m.end())
        if prep in SOURCE_CONTAINERS or phrase is None or phrase == obj:
            continue
        if phrase.split()[0] in ("left", "right", "side", "top", "front") and " of " in rest:
            continue
        return phrase
    return None


class LexicalExtractor:
    """CPU backend of the object-extraction stage."""

    name = "lexical"

    def setup(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name, "version": VERSION, "params": {}}

    def extract(self, texts: list[str]) -> list[ObjectPhrase]:
        return [extract_one(t) for t in texts]
