"""A free-text prompt as token ids, in the model's chat format or as written (`depmask decode`,
a harvest's `prompts_file`); the benchmarks build theirs in `tasks.benchmarks.base`."""

from __future__ import annotations

from depmask.tasks.benchmarks.base import check_chat


def encode_prompt(text: str, tokenizer, chat: bool | None, option: str = "chat") -> list[int]:
    """A prompt's token ids: as a chat user turn with the assistant turn opened (the template's text
    carries its own BOS, so none is added), or the text as written."""
    chat = check_chat(tokenizer, chat, option)
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
