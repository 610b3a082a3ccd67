"""
Batches of a run's examples: tokenized once (tokenize), padded to their longest example per batch (pad_batch).
"""
import torch
from tqdm import tqdm


def tokenize(tokenizer, examples, max_length, rank):
    """-> (the examples' (token ids, token types), their labels): tokenized once, padded per batch."""
    encoded = [tokenizer.encode(e.text_a, e.text_b, max_length=max_length)
               for e in tqdm(examples, desc="tokenize", leave=False, dynamic_ncols=True, disable=rank != 0)]
    return encoded, [e.label for e in examples]


def pad_batch(encoded, labels, indices, pad_id, regression):
    """The examples at `indices`, padded to their longest:
    -> input_ids, attention_mask, token_type_ids (B, T), labels (B,)."""
    rows = [encoded[i] for i in indices]
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    token_types = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T), 1 = token
    for b, (ids, types) in enumerate(rows):
        input_ids[b, :len(ids)], token_types[b, :len(ids)] = torch.tensor(ids), torch.tensor(types)
        mask[b, :len(ids)] = 1
    y = torch.tensor([labels[i] for i in indices], dtype=torch.float32 if regression else torch.long)  # (B,)
    return input_ids, mask, token_types, y
