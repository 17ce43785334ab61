"""Check every QA answer (template or teacher) against the face's labels, cues and provenance.

:func:`check` returns the reason an answer must not be trained on, or None. The
attribute checks reuse :func:`facellm.schema.normalize` clause by clause: a
clause speaks about an attribute when it names one of its values (or, for
yes/no attributes and ambiguous words, a cue word such as "hair" or "glasses");
when it does, the label must be among what it says. Identity claims and answers
to identity questions that don't decline are always rejected.
"""

from __future__ import annotations

import re

from data_pipeline import templates
from facellm.schema import ATTRIBUTES, normalize

_CLAUSES = re.compile(r"(?<=[.;!?])\s+|,\s+|\s+(?:and|but|while|whereas)\s+|\n+")

# a clause is about the attribute only if it contains one of these words (None: the value words suffice)
_CONTEXT = {
    "age": r"\b(?:age\w*|years?|old|young|teen\w*|child|kid|baby|infant|toddler|adult|elderly|senior|"
           r"middle-aged|twenties|thirties|forties|fifties|sixties|seventies|\d0s)\b",
    "gender": None,
    "race": r"\b(?:race|racial|ethnic\w*|white|black|latino|latina|hispanic|asian|indian|middle eastern|caucasian|"
            r"african|arab|persian)\b",
    "expression": None,
    "glasses": r"\b(?:glasses|spectacles|eyeglasses|eyewear)\b",
    "smiling": r"\bsmil\w*",
    "beard": r"\b(?:beard\w*|stubble|clean-shaven|facial hair)\b",
    "skin_tone": r"\b(?:skin|complexion)\b",
    "head_pose": r"\b(?:turn\w*|facing|faces|pose|profile|rotated)\b",
    "hair_color": r"\bhair\b",
}
# colour words that describe things other than a person's race ("black hair", "white background")
_NOT_RACE = re.compile(r"\b(?:white|black)(?:\s+and\s+\w+)?\s+(?:hair|glasses|frames?|background|shirt|"
                       r"clothing|eyes?|beard|wall|light\w*|balance|photo\w*|image|picture)\b", re.I)
# expression words used in other senses ("neutral lighting", "a happy medium")
_NOT_EXPRESSION = re.compile(r"\bneutral\s+(?:light\w*|background|colou?rs?|tones?|grey|gray)\b", re.I)
_NOT_GENDER = re.compile(r"\b(?:his or her|he or she|her or his|she or he)\b", re.I)

# claims about who the person is
_NAME = r"[A-Z][a-z]+(?:[-' ][A-Z][a-z]+)+"
_IDENTITY_CLAIM = re.compile(
    rf"\b(?i:this is|that is|it is|it's|he is|she is|looks like|resembles|appears to be)\s+(?:the\s+\w+\s+)?{_NAME}\b"
    r"|\b(?i:(?:his|her|their|the person's) name is)\b|\bnamed\s+[A-Z]|\bI recogni[sz]e\b|\bknown as\s+[A-Z]"
    r"|\b(?i:famous|celebrity|the actor|the actress|the singer|the president|the politician)\b")
_IDENTITY_QUESTION = re.compile(r"\bwho\b[^?]*\b(?:is|are)\b|\b(?:his|her|their|person's|this person's) name\b"
                                r"|\bidentify (?:the|this) (?:person|man|woman)\b|\brecogni[sz]e\b|\bidentity\b", re.I)
_DECLINE = re.compile(r"\b(?:can't|cannot|can not|won't|don't|do not|isn't something|not able|unable)\b[^.]*"
                      r"\b(?:identify|recogni[sz]e|name)", re.I)
_RACE_WORDS = set(" ".join(ATTRIBUTES["race"].values).replace("_", " ").split())  # "appears to be East Asian"

_CUE_CLAIMS = [  # (pattern, cue, test that makes the claim false, what the cue says)
    (r"\b(?:blurry|blurred|out of focus|unsharp)\b", "blur_laplacian_var",
     lambda v: v >= templates.SHARP_BLUR, "sharp"),
    (r"\b(?:in focus|sharply focused|crisp|(?:face|image|photo|picture) is sharp)\b", "blur_laplacian_var",
     lambda v: v <= templates.BLURRY_BLUR, "blurry"),
    (r"\b(?:dimly lit|poorly lit|underexposed|too dark|very dark|low light)\b", "brightness",
     lambda v: v >= templates.DARK, "not dark"),
    (r"\b(?:well lit|brightly lit|overexposed)\b", "brightness", lambda v: v < templates.DARK, "dark"),
    (r"\beyes (?:are |look )?(?:closed|shut)\b", "eye_openness", lambda v: v >= templates.EYES_OPEN, "eyes open"),
    (r"\beyes (?:are |look )?(?:wide )?open\b", "eye_openness", lambda v: v <= templates.EYES_CLOSED, "eyes closed"),
    (r"\bmouth (?:is |looks )?(?:wide )?open\b", "mouth_openness",
     lambda v: v <= templates.MOUTH_CLOSED, "mouth closed"),
    (r"\bmouth (?:is |looks )?closed\b", "mouth_openness", lambda v: v >= templates.MOUTH_OPEN, "mouth open"),
]
_SYNTHETIC_CLAIM = re.compile(r"\b(?:synthetic|generated|computer-generated|rendered|fake|deepfake|manipulated|"
                              r"drawing|cartoon)\b", re.I)
_REAL_CLAIM = re.compile(r"\b(?:real photograph|real person|authentic photo\w*|genuine photo\w*)\b", re.I)
_NEGATED = re.compile(r"\b(?:not|no|nothing|never|isn't|without)\b[^.]*$", re.I)


def _clauses(text: str) -> list[str]:
    return [c for c in _CLAUSES.split(text) if c and c.strip()]


def _attribute_of(category: str) -> str | None:
    name = category.removeprefix("mcq_")
    return name if name in ATTRIBUTES else None


def _mcq_choice(answer: str) -> str:
    """The option text of an answer like "B. sad" (the letter alone says nothing to check)."""
    return re.sub(r"^\s*\(?[A-D][).:]\s*", "", answer)


def _without_other_senses(attribute: str, text: str, labels: dict[str, str]) -> str:
    """The text minus words that name this attribute's values in another sense ("black hair" for race)."""
    if attribute == "race":
        return _NOT_RACE.sub(" ", text)
    if attribute == "expression":
        text = _NOT_EXPRESSION.sub(" ", text)
        if "smiling" in labels:  # a smile is checked against the smiling label; one can smile while surprised
            text = re.sub(r"\bsmil\w*", " ", text, flags=re.I)
        return text
    if attribute == "gender":
        return _NOT_GENDER.sub(" ", text)
    if attribute == "beard":
        return re.sub(r"\bclean-shaven\b", "no beard", text, flags=re.I)
    return text


def _mentions(attribute: str, clause: str) -> str | None:
    context = _CONTEXT[attribute]
    if context and not re.search(context, clause, re.I):
        return None
    return normalize(attribute, clause)


def attribute_conflicts(text: str, labels: dict[str, str], category: str | None = None) -> list[str]:
    """Attributes the text states differently from the labels, as "attribute: says X, label Y"."""
    if (own := _attribute_of(category or "")) is not None:  # a short answer about one attribute: only that one
        said = normalize(own, _mcq_choice(text)) if own in labels else None
        return [f"{own}: says {said!r}, label {labels[own]!r}"] if said not in (None, labels.get(own)) else []
    conflicts = []
    for attribute, label in labels.items():
        clauses = _clauses(_without_other_senses(attribute, text, labels))
        said = {s for clause in clauses if (s := _mentions(attribute, clause)) is not None}
        if said and label not in said:
            conflicts.append(f"{attribute}: says {sorted(said)[0]!r}, label {label!r}")
    return conflicts


def cue_conflicts(text: str, cues: dict) -> list[str]:
    conflicts = []
    for clause in _clauses(text):
        for pattern, cue, false_if, truth in _CUE_CLAIMS:
            match = re.search(pattern, clause, re.I)
            if match and cue in cues and not _NEGATED.search(clause[: match.start()]) and false_if(cues[cue]):
                conflicts.append(f"{cue}: says {match.group(0)!r}, measured {cues[cue]} ({truth})")
    return conflicts


def provenance_conflict(text: str, source: str) -> str | None:
    if source == "synthetic" and (m := _REAL_CLAIM.search(text)) and not _NEGATED.search(text[: m.start()]):
        return f"provenance: says {m.group(0)!r} of a synthetic face"
    if source != "synthetic" and (m := _SYNTHETIC_CLAIM.search(text)) and not _NEGATED.search(text[: m.start()]):
        return f"provenance: says {m.group(0)!r} of a photograph from {source}"
    return None


def identity_problem(question: str, answer: str) -> str | None:
    match = _IDENTITY_CLAIM.search(answer)
    if match and match.group(0).split()[-1] not in _RACE_WORDS:
        return f"identity claim: {match.group(0)!r}"
    if _IDENTITY_QUESTION.search(question) and not _DECLINE.search(answer):
        return "identity question answered without declining"
    return None


def check(category: str, question: str, answer: str, labels: dict[str, str], cues: dict | None = None,
          source: str = "") -> str | None:
    """Why this QA must be rejected, or None when labels, cues and provenance all agree with it."""
    if not question.strip() or not answer.strip():
        return "empty question or answer"
    if problem := identity_problem(question, answer):
        return problem
    if conflicts := attribute_conflicts(answer, labels, category):
        return "contradicts label: " + "; ".join(conflicts)
    if conflicts := cue_conflicts(answer, cues or {}):
        return "contradicts cue: " + "; ".join(conflicts)
    return provenance_conflict(answer, source)
