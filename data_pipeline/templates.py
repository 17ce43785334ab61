"""Template QA: several phrasings per question and per answer, from labels and face cues only.

Answers state exactly what the labels and cues say and nothing more, and every
answer maps back to its label through :func:`facellm.schema.normalize` (tested).
Perceived attributes (age, gender, race) are phrased as appearance, never identity.
"""

from __future__ import annotations

import random

from facellm.schema import ATTRIBUTES, SYNTHETIC_ATTRIBUTES

QUESTIONS = {
    "expression": ("What is the facial expression?", "What emotion does this person show?",
                   "How does this person feel?", "Describe the expression on this face."),
    "glasses": ("Is the person wearing glasses?", "Does this person have glasses on?",
                "Are there glasses on this face?"),
    "skin_tone": ("What is the skin tone?", "Describe this person's skin tone.",
                  "Is the skin light, medium or dark?"),
    "head_pose": ("Which way is the head turned?", "What is the head pose?",
                  "Is the person facing the camera or turned to a side?"),
    "hair_color": ("What color is the hair?", "What is this person's hair colour?",
                   "Describe the hair color."),
    "age": ("How old does this person look?", "What is the apparent age group of this person?",
            "Estimate the age of the person in the image."),
    "gender": ("What is the perceived gender of this person?", "Does this person appear to be a man or a woman?"),
    "race": ("What is the perceived race of this person?", "Which FairFace race group does this person appear to belong to?"),
    "smiling": ("Is the person smiling?", "Does this person smile?"),
    "beard": ("Does the person have a beard?", "Is there a beard on this face?"),
}
DESCRIBE = ("Describe this face.", "Describe the person's visible attributes.", "Give a short description of this face.")
QUALITY_QUESTIONS = ("Is this face image sharp or blurry?", "How is the image quality of this face?")
LIGHTING_QUESTIONS = ("How is the face lit?", "Is the face well lit?")


def _words(label: str) -> str:
    return {"Latino_Hispanic": "Latino or Hispanic"}.get(label, label)


def _categorical(phrasings: tuple[str, ...], values) -> dict[str, tuple[str, ...]]:
    return {v: tuple(p.format(v=_words(v), V=_words(v)[0].upper() + _words(v)[1:]) for p in phrasings) for v in values}


ANSWERS = {
    "expression": _categorical(("The person looks {v}.", "The expression is {v}.", "{V}."),
                               ATTRIBUTES["expression"].values),
    "glasses": {"yes": ("Yes, the person wears glasses.", "Yes.", "Yes, glasses."),
                "no": ("No, no glasses.", "No.", "No, the person does not wear glasses.")},
    "skin_tone": _categorical(("The skin tone is {v}.", "{V}.", "{V} skin."), ATTRIBUTES["skin_tone"].values),
    "head_pose": {"left": ("The head is turned to the left.", "Turned left.", "Left."),
                  "right": ("The head is turned to the right.", "Turned right.", "Right."),
                  "frontal": ("The person faces the camera.", "Frontal.", "The head pose is frontal.")},
    "hair_color": _categorical(("The hair is {v}.", "{V} hair.", "{V}."), ATTRIBUTES["hair_color"].values),
    "age": {**_categorical(("The person looks {v} years old.", "Apparent age group: {v}."), ATTRIBUTES["age"].values[:-1]),
            "70+": ("The person looks over 70 years old.", "Apparent age group: more than 70.")},
    "gender": {"male": ("The person appears to be a man.", "Perceived gender: male."),
               "female": ("The person appears to be a woman.", "Perceived gender: female.")},
    "race": _categorical(("The person appears {v}.", "Perceived race group: {v}."), ATTRIBUTES["race"].values),
    "smiling": {"yes": ("Yes, the person is smiling.", "Yes."), "no": ("No, the person is not smiling.", "No.")},
    "beard": {"yes": ("Yes, the person has a beard.", "Yes."), "no": ("No, there is no beard.", "No.")},
}

_POSE_PHRASE = {"left": "head turned to the left", "right": "head turned to the right", "frontal": "facing the camera"}


def question(attribute: str, rng: random.Random) -> str:
    return rng.choice(QUESTIONS[attribute])


def answer(attribute: str, label: str, rng: random.Random) -> str:
    return rng.choice(ANSWERS[attribute][label])


def description(labels: dict[str, str]) -> str:
    glasses = "wearing glasses" if labels["glasses"] == "yes" else "without glasses"
    return (f"A {labels['expression']} person with {labels['skin_tone']} skin and {labels['hair_color']} hair, "
            f"{glasses}, {_POSE_PHRASE[labels['head_pose']]}.")


def qa_pairs(labels: dict[str, str], rng: random.Random) -> list[tuple[str, str, str]]:
    """(category, question, answer) for every attribute in ``labels``, plus a description when all are known."""
    pairs = [(a, question(a, rng), answer(a, labels[a], rng)) for a in QUESTIONS if a in labels]
    if all(a in labels for a in SYNTHETIC_ATTRIBUTES):  # what description() states
        pairs.append(("description", rng.choice(DESCRIBE), description(labels)))
    return pairs


# ------------------------------------------------------------------ from face cues

FRONTAL_YAW = 12.0  # degrees; beyond this the head counts as turned
SHARP_BLUR, BLURRY_BLUR = 100.0, 30.0  # Laplacian variance of the face crop
DARK, BRIGHT = 60.0, 200.0  # mean grey level of the face crop


def pose_from_cues(cues: dict) -> str | None:
    if "yaw" not in cues:
        return None
    if abs(cues["yaw"]) < FRONTAL_YAW:
        return "frontal"
    return "right" if cues["yaw"] > 0 else "left"


def cue_qa(cues: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Questions the cues answer; where a cue is in between its thresholds, no claim is made."""
    pairs = []
    blur = cues.get("blur_laplacian_var")
    if blur is not None and (blur >= SHARP_BLUR or blur <= BLURRY_BLUR):
        pairs.append(("image_quality", rng.choice(QUALITY_QUESTIONS),
                      "The face is sharp and in focus." if blur >= SHARP_BLUR else "The face is blurry."))
    brightness = cues.get("brightness")
    if brightness is not None:
        lit = "dark" if brightness < DARK else "very bright, possibly overexposed" if brightness > BRIGHT else "well lit"
        pairs.append(("lighting", rng.choice(LIGHTING_QUESTIONS), f"The face is {lit}."))
    return pairs
