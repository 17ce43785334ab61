import jsonschema
import pytest

from facellm.schema import ATTRIBUTES, SYNTHETIC_ATTRIBUTES, age_group, json_schema, normalize, validate_labels


@pytest.mark.parametrize("attribute,text,label", [
    ("age", "she looks about 25", "20-29"),
    ("age", "in his forties", "40-49"),
    ("age", "probably 30-35 years old", "30-39"),
    ("age", "a teenager", "10-19"),
    ("age", "70+", "70+"),
    ("age", "an elderly man of 82", "70+"),
    ("age", "a baby", "0-2"),
    ("expression", "smiling broadly", "happy"),
    ("expression", "He is not smiling; he looks sad.", "sad"),
    ("expression", "The expression is neutral.", "neutral"),
    ("expression", "She looks astonished", "surprised"),
    ("expression", "furious", "angry"),
    ("glasses", "Yes, the person wears glasses.", "yes"),
    ("glasses", "No, the person does not wear glasses.", "no"),
    ("glasses", "No.", "no"),
    ("glasses", "without glasses", "no"),
    ("head_pose", "The head is turned to the left.", "left"),
    ("head_pose", "The person faces the camera.", "frontal"),
    ("head_pose", "Turned right.", "right"),
    ("skin_tone", "Dark skin.", "dark"),
    ("hair_color", "grey hair", "gray"),
    ("hair_color", "The hair is blonde.", "blond"),
    ("race", "an East Asian woman", "East Asian"),
    ("race", "Latino", "Latino_Hispanic"),
    ("gender", "She is a woman.", "female"),
    ("gender", "a man", "male"),
])
def test_normalize_maps_free_text_to_labels(attribute, text, label):
    assert normalize(attribute, text) == label


@pytest.mark.parametrize("attribute,text", [
    ("expression", "xq zz"), ("skin_tone", ""), ("head_pose", "maybe"), ("age", "unknown"),
])
def test_normalize_returns_none_when_nothing_matches(attribute, text):
    assert normalize(attribute, text) is None


def test_fairface_and_emotion_vocabularies():
    assert len(ATTRIBUTES["race"].values) == 7
    assert ATTRIBUTES["gender"].values == ("male", "female")
    assert len(ATTRIBUTES["age"].values) == 9
    assert len(ATTRIBUTES["expression"].values) == 8 and "neutral" in ATTRIBUTES["expression"].values
    assert set(SYNTHETIC_ATTRIBUTES) == {"expression", "glasses", "skin_tone", "head_pose", "hair_color"}


def test_age_group_bins_edges():
    assert [age_group(a) for a in (0, 2, 3, 9, 10, 19, 20, 69, 70, 99)] == [
        "0-2", "0-2", "3-9", "3-9", "10-19", "10-19", "20-29", "60-69", "70+", "70+"]


def test_json_schema_accepts_valid_and_rejects_invalid_records():
    schema = json_schema(("expression", "glasses"))
    jsonschema.validate({"expression": "happy", "glasses": "no"}, schema)
    for bad in ({"expression": "joyful", "glasses": "no"}, {"expression": "happy"},
                {"expression": "happy", "glasses": "no", "extra": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_validate_labels_names_the_problem():
    assert validate_labels({"glasses": "yes"}) == []
    assert validate_labels({"glasses": "maybe"}) == ["glasses='maybe' is not one of ['yes', 'no']"]
    assert validate_labels({"tattoo": "yes"}) == ["unknown attribute 'tattoo'"]
