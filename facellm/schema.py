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


def _categorical(attr: Attribute, text: str) -> str | None:
    text = _NEGATED_SPAN.sub(" ", text)
    best: tuple[int, str] | None = None
    for label in attr.values:
        words = (re.escape(label.lower()).replace("_", "[ _/-]"),) + attr.synonyms.get(label, ())
        match = _words_pattern(words).search(text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


_NO = re.compile(rf"\b(?:no|nope|{_NEGATION}|without|bare)\b", re.I)


def _yes_no(attr: Attribute, text: str) -> str | None:
    if _NO.search(text):
        return "no"
    return "yes" if _words_pattern(("yes", "yeah") + attr.synonyms.get("yes", ())).search(text) else None


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


def _age(text: str) -> str | None:
    if text.strip() in AGE_GROUPS:
        return text.strip()
    if m := _AGE_RANGE.search(text):
        return age_group((int(m.group(1)) + int(m.group(2))) / 2)
    for group, words in _AGE_WORDS.items():
        if _words_pattern(words).search(text):
            return group
    if m := _AGE_NUMBER.search(text):
        return age_group(int(m.group(1)))
    return None


def normalize(name: str, text: str) -> str | None:
    """Map a free-text answer about attribute ``name`` to one of its labels, or None.

    >>> normalize("age", "she looks about 25")
    '20-29'
    >>> normalize("expression", "smiling broadly")
    'happy'
    """
    attr = attribute(name)
    if name == "age":
        return _age(text)
    if attr.values == ("yes", "no"):
        return _yes_no(attr, text)
    return _categorical(attr, text)
