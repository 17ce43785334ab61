"""The face-attribute schema: names, allowed values, JSON Schema, free-text normalisers.

Every stage speaks these labels: the data pipeline writes them, the evaluator
maps a model's free-text answer back onto them with :func:`normalize`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[str, ...]
    description: str
    # label -> words or regexes that mean it in free text (the label itself always counts)
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # a synthetic-face attribute the procedural generator draws with exact ground truth
    synthetic: bool = False


AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")

ATTRIBUTES: dict[str, Attribute] = {
    a.name: a
    for a in [
        Attribute(
            "race",
            ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"),
            "FairFace race group",
            {
                "White": ("white", "caucasian", "european"),
                "Black": ("black", "african"),
                "Latino_Hispanic": ("latino", "latina", "hispanic", "latinx"),
                "East Asian": ("east asian", "chinese", "japanese", "korean"),
                "Southeast Asian": ("southeast asian", "south-east asian", "filipino", "vietnamese", "thai"),
                "Indian": ("indian", "south asian"),
                "Middle Eastern": ("middle eastern", "arab", "persian"),
            },
        ),
        Attribute(
            "gender",
            ("male", "female"),
            "perceived gender (FairFace)",
            {
                "male": ("man", "men", "boy", "he", "his", "him", "gentleman", "masculine"),
                "female": ("woman", "women", "girl", "she", "her", "lady", "feminine"),
            },
        ),
        Attribute("age", AGE_GROUPS, "apparent age group (FairFace bins)"),
        Attribute(
            "expression",
            ("neutral", "happy", "sad", "surprised", "fearful", "disgusted", "angry", "contemptuous"),
            "facial expression: the 7 basic emotions plus neutral",
            {
                "neutral": ("calm", "expressionless", "blank", "no particular expression", "straight face", "relaxed"),
                "happy": ("smil\\w*", "joy\\w*", "cheerful", "grin\\w*", "laugh\\w*", "glad", "delighted", "happiness"),
                "sad": ("unhappy", "sorrow\\w*", "frown\\w*", "upset", "cry\\w*", "gloomy", "downcast", "sadness"),
                "surprised": ("surprise", "astonish\\w*", "shock\\w*", "amazed", "startled", "open mouth"),
                "fearful": ("fear", "afraid", "scared", "frightened", "terrified"),
                "disgusted": ("disgust", "repulsed", "grossed out"),
                "angry": ("anger", "furious", "mad", "annoyed", "irritated", "rage"),
                "contemptuous": ("contempt", "sneer\\w*", "disdain\\w*", "scornful"),
            },
            synthetic=True,
        ),
        Attribute(
            "glasses",
            ("yes", "no"),
            "whether the person wears glasses",
            {"yes": ("wears?", "wearing", "glasses", "spectacles", "eyeglasses")},
            synthetic=True,
        ),
        Attribute("smiling", ("yes", "no"), "whether the person smiles (CelebA)",
                  {"yes": ("smil\\w*", "grin\\w*")}),
        Attribute("beard", ("yes", "no"), "whether the person has a beard (CelebA)",
                  {"yes": ("beard\\w*", "stubble", "has")}),
        Attribute(
            "skin_tone",
            ("light", "medium", "dark"),
            "skin tone, three coarse bands",
            {"light": ("fair", "pale"), "medium": ("olive", "tan", "tanned", "intermediate"), "dark": ("deep", "brown")},
            synthetic=True,
        ),
        Attribute(
            "head_pose",
            ("left", "frontal", "right"),
            "where the head is turned, from the viewer's side",
            {"frontal": ("front\\w*", "forward", "straight ahead", "fac\\w+ (?:the )?(?:camera|viewer)", "toward the camera")},
            synthetic=True,
        ),
        Attribute(
            "hair_color",
            ("black", "brown", "blond", "gray"),
            "hair colour",
            {"blond": ("blonde", "fair-haired", "golden"), "gray": ("grey", "silver", "white")},
            synthetic=True,
        ),
    ]
}

SYNTHETIC_ATTRIBUTES = tuple(name for name, a in ATTRIBUTES.items() if a.synthetic)


def attribute(name: str) -> Attribute:
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise KeyError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}") from None


def validate_labels(labels: dict[str, str]) -> list[str]:
    """Problems with a label dict, one sentence each (empty when valid)."""
    problems = []
    for name, value in labels.items():
        if name not in ATTRIBUTES:
            problems.append(f"unknown attribute {name!r}")
        elif value not in ATTRIBUTES[name].values:
            problems.append(f"{name}={value!r} is not one of {list(ATTRIBUTES[name].values)}")
    return problems


def json_schema(names: tuple[str, ...] | None = None) -> dict:
    """JSON Schema of an attribute record: each attribute one of its allowed values."""
    names = names or tuple(ATTRIBUTES)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "FaceAttributes",
        "type": "object",
        "properties": {
            n: {"type": "string", "enum": list(attribute(n).values), "description": attribute(n).description}
            for n in names
        },
        "required": list(names),
        "additionalProperties": False,
    }


# ---------------------------------------------------------------- normalisers

_NEGATION = r"(?:not|no|never|without|isn't|is not|aren't|doesn't|does not|don't|nor)"
_NEGATED_SPAN = re.compile(rf"\b{_NEGATION}\s+(?:(?:a|an|any|the|very|really|particularly|wearing|wear)\s+)*[\w-]+", re.I)


def _words_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.I)


# Each reader returns (label, span): the label and the characters of the answer it was read from
Reading = tuple[str, tuple[int, int]] | None


def _categorical(attr: Attribute, text: str) -> Reading:
    text = _NEGATED_SPAN.sub(lambda m: " " * len(m.group()), text)  # blanked, so offsets stay put
    best: Reading = None
    for label in attr.values:
        words = (re.escape(label.lower()).replace("_", "[ _/-]"),) + attr.synonyms.get(label, ())
        match = _words_pattern(words).search(text)
        if match and (best is None or match.start() < best[1][0]):
            best = (label, match.span())
    return best


# the words a yes/no answer is read from (and, for calibration, stated with; "not" stands for _NEGATION)
_YES_WORDS, _NO_WORDS = ("yes", "yeah"), ("no", "nope", "without", "bare")
_NO = re.compile(rf"\b(?:{'|'.join(_NO_WORDS)}|{_NEGATION})\b", re.I)


def _yes_no(attr: Attribute, text: str) -> Reading:
    if match := _NO.search(text):
        return "no", match.span()
    match = _words_pattern(_YES_WORDS + attr.synonyms.get("yes", ())).search(text)
    return ("yes", match.span()) if match else None


_AGE_WORDS = {
    "0-2": ("baby", "infant", "newborn", "toddler"),
    "3-9": ("child", "kid", "little boy", "little girl"),
    "10-19": ("teen\\w*", "adolescent"),
    "20-29": ("young adult", "twenties", "20s"),
    "30-39": ("thirties", "30s"),
    "40-49": ("forties", "40s", "middle-aged", "middle aged"),
    "50-59": ("fifties", "50s"),
    "60-69": ("sixties", "60s"),
    "70+": ("seventies", "eighties", "nineties", "70s", "80s", "90s", "elderly", "senior", "more than 70", "over 70"),
}
_AGE_RANGE = re.compile(r"\b(\d{1,3})\s*(?:-|–|to)\s*(\d{1,3})\b")
_AGE_NUMBER = re.compile(r"\b(\d{1,3})\b")


def age_group(years: float) -> str:
    """FairFace bin of an age in years."""
    for group in AGE_GROUPS[:-1]:
        low, high = (int(x) for x in group.split("-"))
        if years < high + 1:
            return group
    return "70+"


def _age(text: str) -> Reading:
    if text.strip() in AGE_GROUPS:
        start = text.index(text.strip())
        return text.strip(), (start, start + len(text.strip()))
    if m := _AGE_RANGE.search(text):
        return age_group((int(m.group(1)) + int(m.group(2))) / 2), m.span()
    for group, words in _AGE_WORDS.items():
        if m := _words_pattern(words).search(text):
            return group, m.span()
    if m := _AGE_NUMBER.search(text):
        return age_group(int(m.group(1))), m.span()
    return None


def age_in_years(text: str) -> float | None:
    """The age an answer states, in years, read where ``read_label`` read its bin: the number, the middle
    of the range, or the middle of the bin ("in her twenties" -> 24.5; "70+" -> 75).

    >>> age_in_years("she looks about 25"), age_in_years("30, give or take"), age_in_years("30 to 40")
    (25.0, 30.0, 35.0)
    """
    reading = _age(text)
    if reading is None:
        return None
    group, (start, end) = reading
    said = text[start:end]
    if m := _AGE_RANGE.fullmatch(said):
        return (int(m.group(1)) + int(m.group(2))) / 2
    if said.isdigit():
        return float(said)
    low, _, high = group.rstrip("+").partition("-")
    return (int(low) + int(high)) / 2 if high else int(low) + 5


def age_bins_apart(a: str, b: str) -> int:
    """How many FairFace bins separate two age groups."""
    return abs(AGE_GROUPS.index(a) - AGE_GROUPS.index(b))


def normalize(name: str, text: str) -> str | None:
    """Map a free-text answer about attribute ``name`` to one of its labels, or None.

    >>> normalize("age", "she looks about 25")
    '20-29'
    >>> normalize("expression", "smiling broadly")
    'happy'
    """
    reading = read_label(name, text)
    return reading[0] if reading else None


def label_words(name: str) -> dict[str, tuple[str, ...]]:
    """Label -> the plain words an answer states it with (lower case; regex synonyms left out). Age
    numbers belong to no one bin: the digits are listed under ``""``."""
    attr = attribute(name)
    words = {v: (v.lower().replace("_", " "), *attr.synonyms.get(v, ())) for v in attr.values}
    if name == "age":
        words = {g: (g, *_AGE_WORDS.get(g, ())) for g in AGE_GROUPS} | {"": tuple("0123456789")}
    if attr.values == ("yes", "no"):
        words["yes"] += _YES_WORDS
        words["no"] += (*_NO_WORDS, "not")
    return {label: tuple(dict.fromkeys(w.lower() for w in ws if re.fullmatch(r"[\w '-]+", w)))
            for label, ws in words.items()}


def read_label(name: str, text: str) -> Reading:
    """(label, (start, end)): ``normalize``'s label and the span of ``text`` it was read from, or None.

    >>> read_label("skin_tone", "The skin tone is dark.")
    ('dark', (17, 21))
    """
    attr = attribute(name)
    if name == "age":
        return _age(text)
    if attr.values == ("yes", "no"):
        return _yes_no(attr, text)
    return _categorical(attr, text)
