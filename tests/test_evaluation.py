from facellm.evaluation import markdown_table, prompt_messages, question_records, score
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
