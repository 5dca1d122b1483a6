"""Items, trainer settings and a GSM8K file that the harvest tests feed the harvester."""

import json

from depmask.data_gen import HarvestConfig, build_items, group_items
from tests.conftest import EMBEDDED

QUIET = {"accelerator": "cpu"}


def _items(embedded, **kw):
    cfg = HarvestConfig(model=str(EMBEDDED), **kw)
    return cfg, group_items(build_items(cfg, embedded.tokenizer), cfg.batch_size)


def _gsm8k_file(path, n=4):
    path.write_text("".join(json.dumps({"question": f"Sam has {i} pens{' and a box' * (i % 3)}. He buys {i + 1}. How many?",
                                        "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}) + "\n"
                            for i in range(n)))
    return path
