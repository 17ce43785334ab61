import math

import pytest

from facellm.eval.attributes import markdown_table, prompt_messages, question_records, score
from facellm.records import chat


def record(attribute, truth, i=0):
    return {"id": f"r{i}#{attribute}", "images": ["x.png"], "messages": chat("q?", "a."),
            "labels": {attribute: truth}, "category": attribute}


def test_score_counts_correct_wrong_and_unparseable_per_attribute():
    records = [record("expression", "happy", 0), record("expression", "sad", 1), record("expression", "sad", 2),
               record("glasses", "yes", 3)]
    answers = ["She is smiling.", "The person looks happy.", "zzz", "Yes, glasses."]
    result = score(records, answers)
    expression = result["attributes"]["expression"]
    assert (expression["n"], expression["correct"], expression["unparseable"]) == (3, 1, 1)
    assert expression["accuracy"] == 1 / 3
    assert expression["chance"] == 1 / 2  # two classes present among the records
    assert result["attributes"]["glasses"]["accuracy"] == 1.0
    # "She is smiling." reads as happy: right; "looks happy" for a sad face: wrong; "zzz": unparseable
    assert expression["confusion"] == {"happy": {"happy": 1}, "sad": {"happy": 1, "unparseable": 1}}
    assert result["mean_accuracy"] == (1 / 3 + 1) / 2
    assert result["samples"][2] == {"id": "r2#expression", "attribute": "expression", "truth": "sad",
                                    "predicted": None, "answer": "zzz", "expected_answer": "a.", "groups": {}}
    table = markdown_table({"base": result})
    assert "| expression | 3 | 50.0% | 33.3% (1 unparseable) |" in table


def test_only_attribute_questions_are_scored_and_the_answer_is_not_sent():
    description = {**record("expression", "happy"), "category": "description"}
    records = [record("glasses", "no"), description]
    assert question_records(records) == records[:1]
    assert [m["role"] for m in prompt_messages(records[0])] == ["user"]


def test_age_is_scored_by_bin_within_one_bin_and_in_years_where_exact_ages_are_known():
    truths = [("20-29", 26), ("20-29", 22), ("30-39", 35), ("60-69", None), ("70+", 80)]
    records = [{**record("age", t, i), "face": {"age_years": years} if years is not None else None}
               for i, (t, years) in enumerate(truths)]
    answers = ["About 25.", "In their thirties.", "Hard to say.", "50-59", "70+"]
    age = score(records, answers)["attributes"]["age"]
    assert age["accuracy"] == 2 / 5
    assert age["within_one_bin"] == 4 / 5  # the thirties and the fifties are one bin off; no answer is not
    # |25-26| + |34.5-22| + |75-80| over the three answers that state an age for a known exact age
    assert age["mae_years"] == (1 + 12.5 + 5) / 3 and age["mae_n"] == 3
    no_exact = score(records[3:4], answers[3:4])["attributes"]["age"]
    assert "mae_years" not in no_exact and no_exact["within_one_bin"] == 1.0


def test_calibration_bins_ece_and_brier():
    from facellm.eval.calibration import calibration

    # four answers at 0.95 confidence, three right; two at 0.55, one right
    result = calibration([0.95, 0.95, 0.95, 0.95, 0.55, 0.55], [True, True, True, False, True, False])
    assert result["accuracy"] == 4 / 6 and result["mean_confidence"] == pytest.approx((4 * 0.95 + 2 * 0.55) / 6)
    assert result["ece"] == pytest.approx(4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(0.5 - 0.55))
    assert result["brier"] == pytest.approx((3 * 0.05 ** 2 + 0.95 ** 2 + 0.45 ** 2 + 0.55 ** 2) / 6)
    assert [b["n"] for b in result["bins"]] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 4]
    assert calibration([1.0], [True])["ece"] == 0 and calibration([1.0], [True])["bins"][-1]["n"] == 1


def test_confidence_weighs_the_stated_label_against_the_other_labels_not_other_phrasings():
    records = [record("glasses", "yes", 0), record("glasses", "no", 1), record("glasses", "no", 2),
               record("glasses", "no", 3)]
    answers = ["Yes.", "Yes, I think.", "No.", "zzz"]
    p = math.log
    logprobs = [[("Yes", p(0.9), [("Yes", p(0.9)), ("No", p(0.05)), ("The", p(0.05))]), (".", 0.0, [])],
                # the server's tokens may carry the space the answer was stripped of; "The ..." would be
                # another phrasing, not another label, and "I think" after the label does not count
                [(" Yes", p(0.6), [(" Yes", p(0.6)), (" The", p(0.4))]), (",", p(0.5), []),
                 (" I think.", p(0.5), [])],
                None,
                [("zz", p(0.5), []), ("z", p(0.5), [])]]  # no label read: the whole answer's probability
    result = score(records, answers, logprobs)
    assert [s.get("confidence") for s in result["samples"]] == pytest.approx([0.9 / 0.95, 1.0, None, 0.25])
    # a synonym of the stated label adds to it ("Cheerful" is happy too); another label counts against it
    happy = score([record("expression", "happy")], ["Happy."],
                  [[("Happy", p(0.5), [("Happy", p(0.5)), ("Cheerful", p(0.3)), ("Sad", p(0.1))]), (".", 0.0, [])]])
    assert happy["samples"][0]["confidence"] == pytest.approx(0.8 / 0.9)
    assert result["calibration"]["n"] == 3  # the answer without logprobs is left out
    # bins: [0.9, 1.0] holds one hit and one miss, [0.2, 0.3) one miss
    assert result["calibration"]["ece"] == pytest.approx(2 / 3 * ((0.9 / 0.95 + 1.0) / 2 - 0.5) + 1 / 3 * 0.25)
    assert "calibration" not in score(records, answers)
