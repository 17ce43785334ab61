"""Answer validation: planted contradictions are caught with their reason, consistent answers pass."""

import random

import pytest

from data_pipeline import synthetic
from data_pipeline.templates import TemplateOptions, template_qa
from data_pipeline.validate import check
from facellm.schema import AGE_GROUPS, ATTRIBUTES

FAIRFACE = {"age": "20-29", "gender": "female", "race": "White"}
CELEBA = {"gender": "male", "glasses": "no", "smiling": "yes", "beard": "yes", "hair_color": "black"}
SYNTH = {"expression": "happy", "glasses": "no", "skin_tone": "dark", "head_pose": "left", "hair_color": "blond"}
CUES = {"blur_laplacian_var": 800.0, "brightness": 150.0, "contrast": 50.0, "eye_openness": 0.3,
        "mouth_openness": 0.05, "smile": 0.12, "yaw": -20.0, "pitch": 3.0, "roll": 1.0}

# (kind, category, question, answer, labels, source, what the reason must mention)
PLANTED = [
    ("gender", "teacher_expression", "How does she feel?", "The man looks cheerful.", FAIRFACE, "fairface", "gender"),
    ("age", "teacher_demographics", "How old?", "She looks about 45 years old.", FAIRFACE, "fairface", "age"),
    ("race", "teacher_demographics", "Describe her.", "The woman appears East Asian.", FAIRFACE, "fairface", "race"),
    ("expression", "teacher_expression", "Emotion?", "He looks angry and tense.", SYNTH, "synthetic", "expression"),
    ("smiling", "teacher_expression", "Smile?", "He is not smiling at all.", CELEBA, "celeba", "smiling"),
    ("glasses", "teacher_fine_detail", "Eyewear?", "He wears thick glasses.", CELEBA, "celeba", "glasses"),
    ("beard", "teacher_fine_detail", "Facial hair?", "He is clean-shaven.", CELEBA, "celeba", "beard"),
    ("hair", "teacher_fine_detail", "Hair?", "His hair is blond and short.", CELEBA, "celeba", "hair_color"),
    ("skin", "teacher_skin_texture", "Skin?", "The skin is light and smooth.", SYNTH, "synthetic", "skin_tone"),
    ("pose", "teacher_head_pose", "Pose?", "The head is turned to the right.", SYNTH, "synthetic", "head_pose"),
    ("identity claim", "teacher_demographics", "Describe the person.", "This is Tom Hanks, smiling.", CELEBA,
     "celeba", "identity claim"),
    ("identity answered", "teacher_demographics", "Who is this?", "A man in his thirties with a beard.", CELEBA,
     "celeba", "identity question"),
    ("blur cue", "teacher_lighting_quality", "Quality?", "The image is blurry.", FAIRFACE, "fairface",
     "blur_laplacian_var"),
    ("light cue", "teacher_lighting_quality", "Light?", "The face is dimly lit.", FAIRFACE, "fairface", "brightness"),
    ("eyes cue", "teacher_fine_detail", "Eyes?", "Her eyes are closed.", FAIRFACE, "fairface", "eye_openness"),
    ("provenance", "teacher_forensic", "Real?", "This looks like a deepfake.", FAIRFACE, "fairface", "provenance"),
    ("synthetic called real", "teacher_forensic", "Real?", "It is a real photograph.", SYNTH, "synthetic",
     "provenance"),
    ("mcq letter", "mcq_expression", "What emotion?\nA. sad\nB. happy", "A. sad", SYNTH, "synthetic", "expression"),
    ("template attribute", "age", "How old?", "The person looks 60-69 years old.", FAIRFACE, "fairface", "age"),
]


@pytest.mark.parametrize("kind, category, question, answer, labels, source, mention", PLANTED,
                         ids=[p[0] for p in PLANTED])
def test_planted_contradiction_is_rejected_with_its_reason(kind, category, question, answer, labels, source,
                                                           mention):
    reason = check(category, question, answer, labels, CUES, source)
    assert reason is not None and mention in reason, (kind, reason)


CONSISTENT = [
    ("teacher_demographics", "Describe her.", "A White woman in her twenties with black hair.", FAIRFACE, "fairface"),
    ("teacher_demographics", "Describe him.", "A man with black hair and a beard, smiling, no glasses.", CELEBA,
     "celeba"),
    ("teacher_fine_detail", "Detail?", "He has short black hair, a full beard and no glasses.", CELEBA, "celeba"),
    ("teacher_lighting_quality", "Quality?", "The photo is sharp and well lit against a white background.",
     {"race": "Black"}, "fairface"),
    ("teacher_expression", "Mood?", "She looks happy, with a broad smile; the lighting is neutral.", SYNTH,
     "synthetic"),
    ("teacher_forensic", "Real?", "This face is synthetic, a computer-generated drawing, not a real person.", SYNTH,
     "synthetic"),
    ("teacher_forensic", "Real?", "Nothing suggests it was generated or manipulated.", FAIRFACE, "fairface"),
    ("identity_refusal", "Who is this?", "I can't identify people from their faces. She looks 20-29 years old.",
     FAIRFACE, "fairface"),
    ("teacher_head_pose", "Pose?", "The head is turned slightly to the left; yaw about 20 degrees.", SYNTH,
     "synthetic"),
]


@pytest.mark.parametrize("category, question, answer, labels, source", CONSISTENT)
def test_consistent_answers_pass(category, question, answer, labels, source):
    assert check(category, question, answer, labels, CUES, source) is None


def _consistent_labels(rng: random.Random) -> dict:
    """Labels a real dataset could give together (a smile label agrees with the expression)."""
    kind = rng.choice(("fairface", "celeba", "synthetic", "rafdb"))
    if kind == "fairface":
        return {"age": rng.choice(AGE_GROUPS), "gender": rng.choice(("male", "female")),
                "race": rng.choice(ATTRIBUTES["race"].values)}
    if kind == "celeba":
        return {a: rng.choice(ATTRIBUTES[a].values) for a in ("gender", "glasses", "smiling", "beard", "hair_color")}
    if kind == "rafdb":
        return {"expression": rng.choice(ATTRIBUTES["expression"].values)}
    return synthetic.sample_spec(rng.randint(0, 10**6)).labels


def test_every_template_answer_passes_validation():
    rng = random.Random(0)
    options = TemplateOptions(mcq_per_face=3, refusal_rate=0.5)
    checked = set()
    for _ in range(1500):
        labels = _consistent_labels(rng)
        cues = {"blur_laplacian_var": rng.choice([10, 60, 500]), "brightness": rng.choice([30, 120, 230]),
                "contrast": rng.choice([10, 50]), "face_length_ratio": rng.uniform(1.0, 1.6),
                "yaw": rng.uniform(-40, 40), "pitch": rng.uniform(-20, 20), "roll": rng.uniform(-10, 10),
                "eye_openness": rng.choice([0.05, 0.15, 0.3]), "mouth_openness": rng.choice([0.05, 0.2, 0.4]),
                "smile": rng.choice([-0.05, 0.03, 0.15])}
        source = rng.choice(("synthetic", "fairface"))
        observations = synthetic.EXPRESSION_OBSERVATIONS.get(labels.get("expression")) if source == "synthetic" \
            else None
        face = {"cues": cues, "occlusion": rng.choice((None, "none", "mouth", "eyes"))}
        for category, q, a in template_qa(labels, face, source, rng, options, observations):
            assert check(category, q, a, labels, cues, source) is None, (category, q, a, labels, cues)
            checked.add(category)
    assert {"expression_reasoning", "facial_structure", "head_pose_angles", "identity_refusal", "forensic",
            "mcq_race", "eyes", "mouth", "lighting", "image_quality", "occlusion", "description"} <= checked
