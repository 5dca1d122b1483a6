"""A free-text prompt as token ids, in the model's chat format or as written (`depmask decode`,
a harvest's `prompts_file`); the benchmarks build theirs in `tasks.benchmarks.base`."""

from __future__ import annotations

from depmask.tasks.benchmarks.base import has_chat_template


def encode_prompt(text: str, tokenizer, chat: bool | None) -> list[int]:
    """A prompt's token ids: as a chat user turn with the assistant turn opened (the template's text
    carries its own BOS, so none is added), or the text as written."""
    if chat is None:
        chat = has_chat_template(tokenizer)
    elif chat and not has_chat_template(tokenizer):
        raise ValueError("`chat` is true but the model's tokenizer has no chat template")
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
