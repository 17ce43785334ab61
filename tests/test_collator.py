import random

import pytest
import torch

from facellm.modeling import load_processor
from finetune.collator import IGNORE, ChatCollator, group_by_image


def chat(*turns, image=True):
    messages = []
    for i, (q, a) in enumerate(turns):
        content = ([{"type": "image", "text": None}] if image and i == 0 else []) + [{"type": "text", "text": q}]
        messages += [{"role": "user", "content": content},
                     {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    return messages


@pytest.fixture(scope="module")
def collator(tiny_model_dir, face_png):
    return ChatCollator(load_processor(tiny_model_dir), face_png.parent)


def runs(labels):
    out, current = [], []
    for i, v in enumerate(labels):
        if v != IGNORE:
            current.append(i)
        elif current:
            out.append(current)
            current = []
    return out + ([current] if current else [])


def test_loss_only_on_assistant_tokens_token_by_token(collator, face_png):
    answers = ["The person looks happy.", "No, no glasses."]
    batch = collator([{"images": [face_png.name],
                       "messages": chat(("What emotion?", answers[0]), ("Glasses?", answers[1]))}])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    tok = collator.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    spans = runs(labels)
    assert len(spans) == 2
    for span, answer in zip(spans, answers):
        # exactly the reply and its end-of-turn token, copied from the inputs
        assert [ids[i] for i in span] == tok(answer, add_special_tokens=False)["input_ids"] + [end]
        assert all(labels[i] == ids[i] for i in span)
        # what comes right before is the assistant header, which is not trained
        header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert ids[span[0] - len(header): span[0]] == header
    # everything else is masked: user text, questions, every image token
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(image_id) == int(batch["image_grid_thw"][0].prod()) // 4 > 0  # 2x2 patches merge
    assert all(labels[i] == IGNORE for i, t in enumerate(ids) if t == image_id)
    assert sum(v != IGNORE for v in labels) == sum(len(s) for s in spans)


def test_padding_is_masked_and_images_never_truncated(collator, face_png):
    long = {"images": [face_png.name], "messages": chat(("Describe this face in detail.", "word " * 30))}
    short = {"images": [face_png.name], "messages": chat(("Hi?", "Yes."))}
    batch = collator([long, short])
    pad_positions = batch["attention_mask"][1] == 0
    assert pad_positions.any()
    assert (batch["labels"][1][pad_positions] == IGNORE).all()
    image_id = collator.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_image = batch["image_grid_thw"].prod(dim=1)
    assert ((batch["input_ids"] == image_id).sum(dim=1) == per_image // 4).all()
    assert batch["pixel_values"].shape[0] == per_image.sum()
    tight = ChatCollator(collator.processor, collator.image_root, max_length=20)
    with pytest.raises(ValueError, match="images are never truncated"):
        tight([long])


def test_group_by_image_puts_each_image_once_and_description_last():
    def rec(img, cat):
        return {"id": f"{img}#{cat}", "images": [img], "category": cat,
                "messages": chat((f"q {cat}", f"a {cat}"))}

    records = [rec(img, c) for img in ("a.png", "b.png") for c in ("description", "glasses", "expression")]
    chats = group_by_image(records, random.Random(0))
    assert len(chats) == 2
    for c in chats:
        images = sum(p["type"] == "image" for m in c["messages"] for p in m["content"])
        assert images == 1 and c["messages"][0]["content"][0]["type"] == "image"
        assert c["messages"][-1]["content"][0]["text"] == "a description"
        assert len(c["messages"]) == 6


def test_labels_align_with_model_loss(collator, face_png, tiny_model_dir):
    """The model's own loss on these labels is finite and uses only the unmasked tokens."""
    from facellm.modeling import load_model

    model = load_model(tiny_model_dir)
    batch = collator([{"images": [face_png.name], "messages": chat(("Q?", "Yes."))}])
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0


def test_template_work_is_done_once_per_chat_and_keyed_by_content(collator, face_png):
    """Every epoch collates the same chats: the second time, the chat template is not rendered again, and
    the batch is the same; a chat that differs only in its answer is its own entry, whatever its id."""
    first = {"id": "same", "images": [face_png.name], "messages": chat(("Glasses?", "No glasses."))}
    other = {"id": "same", "images": [face_png.name], "messages": chat(("Glasses?", "Yes, glasses."))}
    batch = collator([first])
    renders = 0
    render = collator.render

    def counting_render(*args, **kwargs):
        nonlocal renders
        renders += 1
        return render(*args, **kwargs)

    collator.render = counting_render
    try:
        again = collator([first])
        assert renders == 0
        assert all(torch.equal(batch[k], again[k]) for k in batch)
        changed = collator([other])
        assert renders > 0
    finally:
        del collator.render
    answer = collator.tokenizer.decode([t for t in changed["labels"][0].tolist() if t != IGNORE])
    assert answer.startswith("Yes, glasses.")


def test_each_batch_carries_its_steps_answer_token_count(collator, face_png):
    """The loss's denominator, counted from text labels before collating, is what the collated labels of
    the step's micro-batches on every rank hold, also for a step that spans two epochs (7 chats, batches
    of 2: 3 a epoch, steps of 2 batches)."""
    from finetune.batches import ShuffledBatches

    chats = [{"id": str(i), "images": [face_png.name],
              "messages": chat(*[(f"Question {j}?", "yes " * (i + j)) for j in range(1 + i % 3)])}
             for i in range(7)]
    ranks = [iter(ShuffledBatches(chats, 2, 0, collator, rank=r, world=2, grad_accum=2)) for r in range(2)]
    for step in range(4):
        held = [next(rank) for _ in range(2) for rank in ranks]
        counted = {int(b["step_answer_tokens"]) for b in held}
        assert counted == {sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in held)}, step
        assert counted.pop() > 0
