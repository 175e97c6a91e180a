"""Writes a checkpoint with a model's shapes and tokenizer but seeded random weights.

For machines that cannot fetch the default model (a lent GPU machine reaches no registry, and
the model's smallest copy is larger than what can be sent there): its speed is the real model's,
and parity tests still compare sluice against transformers on the same weights. Its text is
noise, so nothing that judges text may run on it.

    python bench/random_weights_checkpoint.py SOURCE_DIR OUT_DIR

SOURCE_DIR holds the model's config.json and tokenizer files (the default model's converted
cache directory does, under ~/.cache/sluice/models/)."""

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


def write_random_checkpoint(source: Path, out: Path, seed: int = 0) -> None:
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with config.json and tokenizer")
    parser.add_argument("out", type=Path, help="directory to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_random_checkpoint(args.source, args.out, args.seed)


if __name__ == "__main__":
    main()
