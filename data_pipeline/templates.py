"""Template QA: several phrasings per question and per answer, from labels only.

Answers state exactly what the labels say and nothing more, and every answer
maps back to its label through :func:`facellm.schema.normalize` (tested).
"""

from __future__ import annotations

import random

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
}
DESCRIBE = ("Describe this face.", "Describe the person's visible attributes.", "Give a short description of this face.")

EXPRESSION_ANSWERS = {
    "happy": ("The person looks happy.", "They are smiling; the expression is happy.", "Happy."),
    "sad": ("The person looks sad.", "The expression is sad.", "Sad."),
    "neutral": ("The expression is neutral.", "The person looks neutral.", "Neutral."),
    "surprised": ("The person looks surprised.", "The expression is surprised.", "Surprised."),
}
ANSWERS = {
    "glasses": {"yes": ("Yes, the person wears glasses.", "Yes.", "Yes, glasses."),
                "no": ("No, no glasses.", "No.", "No, the person does not wear glasses.")},
    "skin_tone": {t: (f"The skin tone is {t}.", f"{t.capitalize()}.", f"{t.capitalize()} skin.")
                  for t in ("light", "medium", "dark")},
    "head_pose": {"left": ("The head is turned to the left.", "Turned left.", "Left."),
                  "right": ("The head is turned to the right.", "Turned right.", "Right."),
                  "frontal": ("The person faces the camera.", "Frontal.", "The head pose is frontal.")},
    "hair_color": {c: (f"The hair is {c}.", f"{c.capitalize()} hair.", f"{c.capitalize()}.")
                   for c in ("black", "brown", "blond", "gray")},
    "expression": EXPRESSION_ANSWERS,
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
    """(category, question, answer) for every attribute in ``labels`` plus a description."""
    pairs = [(a, question(a, rng), answer(a, labels[a], rng)) for a in QUESTIONS if a in labels]
    if all(a in labels for a in QUESTIONS):
        pairs.append(("description", rng.choice(DESCRIBE), description(labels)))
    return pairs
