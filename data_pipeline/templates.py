"""Template QA: many phrasings per question and per answer, from labels, face cues and provenance only.

An answer states exactly what the labels and cues say and nothing more; where a
cue sits between its thresholds no claim is made. Every answer passes
:mod:`data_pipeline.validate` (tested). Perceived attributes (age, gender, race)
are phrased as appearance, never identity, and identity questions are declined.

Record categories are the attribute names (what ``facellm eval`` scores) plus
the kinds below; :data:`GROUP_OF` maps each onto FaceLLM's eight categories.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from data_pipeline.identity_questions import identity_question
from facellm.schema import ATTRIBUTES

# FaceLLM's eight QA categories (FairFaceGPT)
GROUPS = ("demographics", "facial_structure", "skin_texture", "expression", "lighting_quality", "head_pose",
          "forensic", "fine_detail")
GROUP_OF = {
    "age": "demographics", "gender": "demographics", "race": "demographics",
    "facial_structure": "facial_structure",
    "skin_tone": "skin_texture",
    "expression": "expression", "smiling": "expression", "expression_reasoning": "expression",
    "image_quality": "lighting_quality", "lighting": "lighting_quality",
    "head_pose": "head_pose", "head_pose_angles": "head_pose",
    "forensic": "forensic",
    "glasses": "fine_detail", "beard": "fine_detail", "hair_color": "fine_detail", "eyes": "fine_detail",
    "mouth": "fine_detail", "occlusion": "fine_detail", "face_count": "fine_detail",
    "description": "description", "identity_refusal": "identity_refusal",
}


def group_of(category: str) -> str:
    """FaceLLM category of a record category (``mcq_<attribute>`` and ``teacher_<group>`` included)."""
    for prefix in ("mcq_", "teacher_"):
        if category.startswith(prefix):
            category = category[len(prefix):]
    return GROUP_OF.get(category, category)


KINDS = ("attributes", "description", "cues", "forensic", "reasoning", "mcq")


@dataclass
class TemplateOptions:
    kinds: tuple[str, ...] = KINDS  # which template families to write
    mcq_per_face: int = 1  # multiple-choice questions per face (on labelled attributes)
    refusal_rate: float = 0.1  # share of faces that also get an identity question and its polite decline

    def __post_init__(self):
        if unknown := set(self.kinds) - set(KINDS):
            raise ValueError(f"unknown template kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if not 0 <= self.refusal_rate <= 1:
            raise ValueError(f"refusal_rate {self.refusal_rate}: expected a fraction in [0, 1]")


# attribute questions and descriptions only: what a tiny model learns in minutes (the demo, training tests)
ATTRIBUTES_ONLY = TemplateOptions(kinds=("attributes", "description"), refusal_rate=0.0)


# ------------------------------------------------------------------ attributes, from labels

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
    """One sentence stating every label there is, e.g. "A happy person with medium skin and gray hair,
    without glasses, facing the camera." """
    noun = {"male": "man", "female": "woman"}.get(labels.get("gender", ""), "person")
    subject = " ".join(filter(None, (labels.get("expression"), noun)))
    subject = ("An " if subject[0] in "aeiou" else "A ") + subject
    if "age" in labels:
        subject += " who looks over 70" if labels["age"] == "70+" else f" who looks {labels['age']} years old"
    features = [f"{labels[a]} {noun_}" for a, noun_ in (("skin_tone", "skin"), ("hair_color", "hair")) if a in labels]
    if labels.get("beard") == "yes":
        features.append("a beard")
    text = subject + (" with " + " and ".join(features) if features else "")
    extras = [f"perceived as {_words(labels['race'])}"] if "race" in labels else []
    if "glasses" in labels:
        extras.append("wearing glasses" if labels["glasses"] == "yes" else "without glasses")
    if labels.get("beard") == "no":
        extras.append("without a beard")
    if "smiling" in labels:
        extras.append("smiling" if labels["smiling"] == "yes" else "not smiling")
    if "head_pose" in labels:
        extras.append(_POSE_PHRASE[labels["head_pose"]])
    return ", ".join([text, *extras]) + "."


def mcq_pairs(labels: dict[str, str], rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """FaceXBench-style multiple choice on labelled attributes: up to 4 options, one correct, answer by letter."""
    pairs = []
    for attribute in rng.sample(sorted(labels), min(n, len(labels))):
        values = ATTRIBUTES[attribute].values
        options = [labels[attribute], *rng.sample([v for v in values if v != labels[attribute]], min(3, len(values) - 1))]
        rng.shuffle(options)
        letters = "ABCD"[: len(options)]
        listing = "\n".join(f"{letter}. {_words(o)}" for letter, o in zip(letters, options))
        correct = letters[options.index(labels[attribute])]
        q = f"{rng.choice(QUESTIONS[attribute])}\n{listing}\nAnswer with the option's letter."
        pairs.append((f"mcq_{attribute}", q, f"{correct}. {_words(labels[attribute])}"))
    return pairs


# ------------------------------------------------------------------ from face cues

FRONTAL_YAW = 12.0  # degrees; beyond this the head counts as turned
SHARP_BLUR, BLURRY_BLUR = 100.0, 30.0  # Laplacian variance of the face crop
DARK, BRIGHT = 60.0, 200.0  # mean grey level of the face crop
LOW_CONTRAST = 25.0  # grey-level standard deviation of the face crop
EYES_CLOSED, EYES_OPEN = 0.12, 0.2  # eyelid gap / eye width
MOUTH_CLOSED, MOUTH_OPEN = 0.1, 0.3  # lip gap / mouth width
SMILE_RAISED = 0.08  # mouth corners above the lips' middle, / mouth width
WIDE_FACE, LONG_FACE = 1.15, 1.4  # forehead-chin / cheek-cheek

QUALITY_QUESTIONS = ("Is this face image sharp or blurry?", "How is the image quality of this face?",
                     "Is the face in focus?")
LIGHTING_QUESTIONS = ("How is the face lit?", "Is the face well lit?", "Describe the lighting on the face.")
STRUCTURE_QUESTIONS = ("Describe the proportions of the face.", "Is the face long or wide?",
                       "What shape is the face?")
ANGLE_QUESTIONS = ("Estimate the head's yaw, pitch and roll.", "By how many degrees is the head turned?",
                   "Describe the head pose in angles.")
EYE_QUESTIONS = ("Are the eyes open or closed?", "Are the person's eyes open?")
MOUTH_QUESTIONS = ("Is the mouth open or closed?", "Is the person's mouth open?")


def pose_from_cues(cues: dict) -> str | None:
    if "yaw" not in cues:
        return None
    if abs(cues["yaw"]) < FRONTAL_YAW:
        return "frontal"
    return "right" if cues["yaw"] > 0 else "left"


def _side(angle: float, positive: str, negative: str) -> str:
    return f"{abs(angle):.0f}° {positive if angle > 0 else negative}" if round(angle) else "0°"


def cue_qa(cues: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Questions the measured cues answer: quality, lighting, proportions, pose angles, eyes, mouth."""
    pairs = []
    blur = cues.get("blur_laplacian_var")
    if blur is not None and (blur >= SHARP_BLUR or blur <= BLURRY_BLUR):
        pairs.append(("image_quality", rng.choice(QUALITY_QUESTIONS),
                      "The face is sharp and in focus." if blur >= SHARP_BLUR else "The face is blurry."))
    if (brightness := cues.get("brightness")) is not None:
        lit = "dimly lit" if brightness < DARK else "very brightly lit, possibly overexposed" if brightness > BRIGHT \
            else "well lit"
        flat = cues.get("contrast", LOW_CONTRAST) < LOW_CONTRAST
        pairs.append(("lighting", rng.choice(LIGHTING_QUESTIONS),
                      f"The face is {lit}" + (", with low contrast." if flat else ".")))
    if (ratio := cues.get("face_length_ratio")) is not None:
        shape = "relatively wide" if ratio < WIDE_FACE else "relatively long" if ratio > LONG_FACE else "balanced"
        pairs.append(("facial_structure", rng.choice(STRUCTURE_QUESTIONS),
                      f"Measured from forehead to chin and cheek to cheek, the face is about {ratio:.2f} times "
                      f"as long as it is wide: {shape} proportions."))
    if all(k in cues for k in ("yaw", "pitch", "roll")):
        pairs.append(("head_pose_angles", rng.choice(ANGLE_QUESTIONS),
                      f"Yaw about {_side(cues['yaw'], 'to the right', 'to the left')}, pitch about "
                      f"{_side(cues['pitch'], 'up', 'down')}, roll about "
                      f"{_side(cues['roll'], 'clockwise', 'counter-clockwise')}."))
    eyes = cues.get("eye_openness")
    if eyes is not None and (eyes <= EYES_CLOSED or eyes >= EYES_OPEN):
        pairs.append(("eyes", rng.choice(EYE_QUESTIONS), "The eyes are open." if eyes >= EYES_OPEN
                      else "The eyes are closed or nearly closed."))
    mouth = cues.get("mouth_openness")
    if mouth is not None and (mouth <= MOUTH_CLOSED or mouth >= MOUTH_OPEN):
        pairs.append(("mouth", rng.choice(MOUTH_QUESTIONS), "The mouth is open." if mouth >= MOUTH_OPEN
                      else "The mouth is closed."))
    return pairs


# ------------------------------------------------------------------ expression chain of thought (ExpLLM-style)

REASONING_QUESTIONS = ("What expression does this face show? Explain your reasoning step by step.",
                       "Reason about the facial cues, then name the expression.")


def cue_observations(cues: dict) -> list[str]:
    """Key observations the landmark cues support, in words."""
    notes = []
    if (smile := cues.get("smile")) is not None:
        notes.append("the mouth corners are raised above the middle of the lips" if smile >= SMILE_RAISED
                     else "the mouth corners are level or lowered")
    if (mouth := cues.get("mouth_openness")) is not None and (mouth <= MOUTH_CLOSED or mouth >= MOUTH_OPEN):
        notes.append("the lips are parted wide" if mouth >= MOUTH_OPEN else "the lips are closed")
    if (eyes := cues.get("eye_openness")) is not None and eyes >= EYES_OPEN:
        notes.append("the eyes are open")
    return notes


# what the cues must show before a chain of thought may conclude each expression
_CUES_SUPPORT = {
    "happy": lambda c: c.get("smile", 0) >= SMILE_RAISED,
    "surprised": lambda c: c.get("mouth_openness", 0) >= MOUTH_OPEN and c.get("smile", 1) < SMILE_RAISED,
    "neutral": lambda c: c.get("smile", 1) < SMILE_RAISED and c.get("mouth_openness", 1) <= MOUTH_CLOSED,
}
_INTERPRETATION = {
    "happy": "Raised mouth corners are the mark of a smile, the main sign of happiness.",
    "surprised": "Parted lips without raised corners are typical of surprise.",
    "neutral": "Closed lips with level corners show a relaxed face with no particular emotion.",
    "sad": "Lowered mouth corners and raised inner brow ends are typical of sadness.",
}


def reasoning_qa(expression: str, observations: list[str], rng: random.Random) -> list[tuple[str, str, str]]:
    """Observations -> interpretation -> conclusion; none when the observations don't support the label."""
    if not observations or expression not in _INTERPRETATION:
        return []
    text = (f"Key observations: {'; '.join(observations)}. Interpretation: {_INTERPRETATION[expression]} "
            f"Conclusion: the expression is {expression}.")
    return [("expression_reasoning", rng.choice(REASONING_QUESTIONS), text)]


def cue_reasoning_qa(labels: dict, cues: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    expression = labels.get("expression")
    if expression not in _CUES_SUPPORT or not _CUES_SUPPORT[expression](cues):
        return []
    return reasoning_qa(expression, cue_observations(cues), rng)


# ------------------------------------------------------------------ provenance and identity

FORENSIC_QUESTIONS = ("Is this a real photograph or a generated image?", "Does this face look synthetic or real?",
                      "Are there signs that this face image was generated or manipulated?")
REFUSALS = ("I can't identify people from their faces.", "I don't recognize or name people from their faces.",
            "I don't identify people by their face.")


def forensic_qa(source: str, rng: random.Random) -> list[tuple[str, str, str]]:
    """What the provenance supports: synthetic faces are generated; real datasets are photographs."""
    if source == "synthetic":
        text = "This face is synthetic: a computer-generated drawing, not a photograph of a real person."
    else:
        text = ("It comes from a collection of real photographs; nothing recorded about this image marks it as "
                "generated or manipulated.")
    return [("forensic", rng.choice(FORENSIC_QUESTIONS), text)]


def refusal_qa(labels: dict[str, str], rng: random.Random) -> list[tuple[str, str, str]]:
    text = rng.choice(REFUSALS) + (f" What I can describe: {description(labels)[0].lower()}{description(labels)[1:]}"
                                   if labels else " I can describe the visible attributes of the face if you like.")
    return [("identity_refusal", identity_question(rng), text)]


# ------------------------------------------------------------------ everything for one face

OCCLUSION_QUESTIONS = ("Is any part of the face covered?", "Is the face fully visible?")
OCCLUSION_ANSWERS = {"none": "Nothing covers the face; it is fully visible.",
                     "mouth": "Yes, a mask covers the mouth and the lower face.",
                     "eyes": "Yes, a dark bar covers the eyes."}
POSITIONS = ("first", "second", "third", "fourth", "fifth")


def scene_qa(faces_labels: list[dict[str, str]], rng: random.Random, kinds: tuple[str, ...] = KINDS
             ) -> list[tuple[str, str, str]]:
    """Questions about a whole image whose faces are all known (synthetic scenes): how many faces (with the
    attribute questions), and each face by place (with the descriptions)."""
    n, pairs = len(faces_labels), []
    if "attributes" in kinds:
        pairs.append(("face_count", rng.choice(("How many faces are in this image?", "How many people can you see?")),
                      f"There {'is 1 face' if n == 1 else f'are {n} faces'} in the image."))
    for k, labels in enumerate(faces_labels[: len(POSITIONS)] if n > 1 and "description" in kinds else []):
        pairs.append(("description", f"Describe the {POSITIONS[k]} face from the left.", description(labels)))
    return pairs


def template_qa(labels: dict[str, str], face: dict, source: str, rng: random.Random, options: TemplateOptions,
                observations: list[str] | None = None) -> list[tuple[str, str, str]]:
    """All template QA for one face (``face``: box, cues, occlusion). ``observations`` are expression cues
    known exactly (synthetic faces); without them the chain of thought uses the landmark cues."""
    kinds, pairs, cues = options.kinds, [], face.get("cues") or {}
    if "attributes" in kinds:
        pairs += [(a, question(a, rng), answer(a, labels[a], rng)) for a in QUESTIONS if a in labels]
    if "description" in kinds and labels:
        pairs.append(("description", rng.choice(DESCRIBE), description(labels)))
    if "cues" in kinds:
        pairs += cue_qa(cues, rng)
        if face.get("occlusion") is not None:
            pairs.append(("occlusion", rng.choice(OCCLUSION_QUESTIONS), OCCLUSION_ANSWERS[face["occlusion"]]))
    if "forensic" in kinds:
        pairs += forensic_qa(source, rng)
    if "reasoning" in kinds and "expression" in labels:
        pairs += (reasoning_qa(labels["expression"], observations, rng) if observations is not None
                  else cue_reasoning_qa(labels, cues, rng))
    if "mcq" in kinds:
        pairs += mcq_pairs(labels, rng, options.mcq_per_face)
    if rng.random() < options.refusal_rate:
        pairs += refusal_qa(labels, rng)
    return pairs
