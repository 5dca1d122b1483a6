"""Harvest: decoding states of a frozen MDLM, with attention, hidden states and empirical
pairwise influences, written as resumable, memory-mapped `datasets` shards."""

from depmask.data_gen.config import HarvestConfig
from depmask.data_gen.harvest import GroupResult, harvest_group, prepare_output
from depmask.data_gen.prompts import PromptItem, build_items, group_items, parse_policy
from depmask.data_gen.recorder import Recorder
from depmask.data_gen.schema import SCHEMA_VERSION, StateRecord, record_features, records_to_table

__all__ = [
    "SCHEMA_VERSION",
    "GroupResult",
    "HarvestConfig",
    "PromptItem",
    "Recorder",
    "StateRecord",
    "build_items",
    "group_items",
    "harvest_group",
    "parse_policy",
    "prepare_output",
    "record_features",
    "records_to_table",
]
