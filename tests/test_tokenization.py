"""Tests for tokenization.py on tiny hand-written vocabularies (no network, no Hugging Face).

Expected values marked "HF" were produced by the Hugging Face fast tokenizers (transformers 4.57
and 5.23, tokenizers 0.22/0.23) on the same inputs; the rest are checked by hand.
"""
import json

import pytest
from hypothesis import assume, given, settings, strategies as st

from encoder.tokenization import (ByteLevelBPETokenizer, WordPieceTokenizer, bytes_to_unicode, gpt2_pattern,
                          load_tokenizer, longest_first)

SPECIALS_BPE = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
# Hand-written merges, in rank order. "lower" needs all five; " lower" stops at ['Ġlow', 'er']
# because 'e r' (rank 2) is merged before 'Ġ low' (rank 3), which then blocks 'low er' (rank 4).
MERGES = ["l o", "lo w", "e r", "Ġ low", "low er", "a a", "Ġ a"]


def write_bpe(folder, merges=MERGES, drop_bytes=(), config=None):
    """A byte-level BPE folder: specials, the 256 byte symbols (minus `drop_bytes`), merge results."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = SPECIALS_BPE + [c for b, c in bytes_to_unicode().items() if b not in drop_bytes]
    symbols += ["".join(m.split(" ")) for m in merges]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "fox", "un", "##aff", "##able",
                   "jump", "##ing", "hello", "world", "cafe", "café", "Cafe", ",", ".", "!", "$", "^", "[", "]",
                   "«", "mask", "東", "京", "οδοσ", "a", "##a", "b", "##b", "c", "##c"]


def write_wordpiece(folder, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return load_tokenizer(write_bpe(tmp_path_factory.mktemp("bpe")))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return load_tokenizer(write_wordpiece(tmp_path_factory.mktemp("bert")))


def one_at_a_time(len_a, len_b, budget):
    """longest_first stated as a loop: drop a token from the longer sequence; on a tie, from the one
    that was shorter at the start (the first if they started equal). Matches the HF fast tokenizers."""
    drop_first_on_tie = len_a <= len_b
    while len_a + len_b > budget:
        if len_a > len_b or (len_a == len_b and drop_first_on_tie):
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


# ----------------------------------------------------------------------------- truncation rule

@pytest.mark.parametrize("lens, budget, kept", [((4, 4), 5, (2, 3)), ((10, 20), 15, (7, 8)),
                                                 ((20, 10), 15, (8, 7)), ((5, 20), 15, (5, 10)),
                                                 ((3, 9), 1, (0, 1)), ((9, 3), 1, (1, 0))])
def test_longest_first_matches_hf_fast_examples(lens, budget, kept):
    assert longest_first(*lens, budget) == kept                      # HF


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 130))
def test_longest_first_equals_dropping_one_token_at_a_time(len_a, len_b, budget):
    keep_a, keep_b = longest_first(len_a, len_b, budget)
    assert (keep_a, keep_b) == one_at_a_time(len_a, len_b, budget)
    assert keep_a + keep_b == min(len_a + len_b, budget) and keep_a <= len_a and keep_b <= len_b


# ----------------------------------------------------------------------------- byte-level BPE

def test_bytes_to_unicode_is_a_bijection_onto_printable_chars():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("A")] == "A"


def test_gpt2_regex_splits_tricky_text_like_hf():
    text = "Hello world's  café 東京 123 ²½ Ⅻ 🤗!! \n\n\t x \x1c y \x1c!a\x85\x85b it've I'M don't\xa0\u3000z"
    assert gpt2_pattern().findall(text) == [                         # HF ByteLevel pre-tokenizer
        "Hello", " world", "'s", " ", " café", " 東京", " 123", " ²½", " Ⅻ", " 🤗!!", " \n\n\t", " x", " \x1c",
        " y", " \x1c!", "a", "\x85", "\x85", "b", " it", "'ve", " I", "'", "M", " don", "'t", "\xa0", "\u3000", "z"]
    assert gpt2_pattern().findall("he'd you'll we're I'm it's") == [
        "he", "'d", " you", "'ll", " we", "'re", " I", "'m", " it", "'s"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_gpt2_regex_pieces_cover_the_text(text):
    assert "".join(gpt2_pattern().findall(text)) == text


@pytest.mark.parametrize("text, tokens", [("lower", ["lower"]), (" lower", ["Ġlow", "er"]),
                                          ("low lower", ["low", "Ġlow", "er"]), ("aaa", ["aa", "a"]),
                                          ("ol", ["o", "l"]), (" a a", ["Ġa", "Ġa"])])
def test_bpe_applies_merges_in_rank_order(bpe, text, tokens):
    assert bpe.tokenize(text) == tokens


def test_bpe_merge_order_changes_the_result(tmp_path):
    swapped = MERGES[:3] + [MERGES[4], MERGES[3]] + MERGES[5:]      # 'low er' now before 'Ġ low'
    assert load_tokenizer(write_bpe(tmp_path, merges=swapped)).tokenize(" lower") == ["Ġ", "lower"]


def test_bpe_drops_bytes_missing_from_the_vocab_before_merging(tmp_path):
    tok = load_tokenizer(write_bpe(tmp_path, merges=["l o"], drop_bytes="é".encode()))
    assert tok.tokenize("lé o") == ["l", "Ġ", "o"]                   # HF fast (slow gives <unk>)
    assert tok.tokenize("léo") == ["lo"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_decode_inverts_encode(bpe, text):
    assume("<mask>" not in text)                                     # '<mask>' swallows the space before it
    ids, types = bpe.encode(text, max_length=10**6)
    assert bpe.decode(ids[1:-1], skip_special_tokens=False) == text and set(types) == {0}


def test_bpe_pair_layout_is_s_a_sep_sep_b_sep(bpe):
    ids, types = bpe.encode("lower", "aa")
    s, sep = bpe.cls_token_id, bpe.sep_token_id
    assert ids == [s, bpe.vocab["lower"], sep, sep, bpe.vocab["aa"], sep] and types == [0] * 6
    assert bpe.encode("lower", "") == bpe.encode("lower")           # HF: an empty second text is no pair


def test_bpe_special_tokens_in_text_are_kept_whole(bpe):
    assert bpe.tokenize("a <mask> a") == ["a", "<mask>", "Ġa"]     # HF: '<mask>' swallows the space
    assert bpe.tokenize("a <s>a") == ["a", "Ġ", "<s>", "a"]         # HF
    assert bpe.tokenize("a <MASK>") == ["a", "Ġ", "<", "M", "A", "S", "K", ">"]


def test_bpe_special_token_ids_come_from_the_vocab(bpe):
    assert [bpe.cls_token_id, bpe.pad_token_id, bpe.sep_token_id, bpe.unk_token_id] == [0, 1, 2, 3]
    assert bpe.vocab_size == len(bpe.vocab) and bpe.convert_tokens_to_ids(["lower", "nope"]) == [bpe.vocab["lower"], 3]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), st.integers(4, 70))
def test_bpe_truncation_keeps_longest_first_prefixes(bpe, n_a, n_b, max_length):
    text_a, text_b = "aa" * n_a, " a" * n_b                          # n_a and n_b tokens
    ids, _ = bpe.encode(text_a, text_b or None, max_length=max_length)
    if not n_b:
        assert ids == [0] + [bpe.vocab["aa"]] * min(n_a, max_length - 2) + [2]
        return
    keep_a, keep_b = one_at_a_time(n_a, n_b, max_length - 4)
    assert ids == [0] + [bpe.vocab["aa"]] * keep_a + [2, 2] + [bpe.vocab["Ġa"]] * keep_b + [2]
    assert len(ids) == min(n_a + n_b + 4, max_length)


def test_bpe_add_prefix_space_from_tokenizer_config(tmp_path):
    tok = load_tokenizer(write_bpe(tmp_path, config={"add_prefix_space": True}))
    assert tok.tokenize("lower") == ["Ġlow", "er"] and tok.tokenize(" lower") == ["Ġlow", "er"]


# ----------------------------------------------------------------------------- WordPiece

@pytest.mark.parametrize("text, tokens", [
    ("The quick fox", ["the", "quick", "fox"]),                      # lower-cased
    ("Café CAFÉ", ["cafe", "cafe"]),                                 # accents stripped
    ("hello,world!", ["hello", ",", "world", "!"]),                  # punctuation split
    ("hello$world^[a]", ["hello", "$", "world", "^", "[", "a", "]"]),  # ASCII symbols count as punctuation
    ("hello«world", ["hello", "«", "world"]),                        # Unicode P* too
    ("東京hello", ["東", "京", "hello"]),                            # CJK ideographs are words
    ("\U0002b820\U0002b900\U0002b920", ["[UNK]", "[UNK]"]),           # HF fast: Ext E from U+2B920
    ("ΟΔΟΣ", ["οδοσ"]),                                              # HF fast: lower-cased char by char
    ("unaffable jumping", ["un", "##aff", "##able", "jump", "##ing"]),  # ## continuation
    ("jumpx fox", ["[UNK]", "fox"]),                                 # unsplittable word -> one [UNK]
    ("hel\x00lo\ufffd \u200bfox\x7f", ["hello", "fox"]),             # NUL, U+FFFD, Cf, Cc dropped
    ("hello\u00a0world\u3000fox\t\n", ["hello", "world", "fox"]),    # Unicode whitespace splits
    ("hello\U000e0080", ["[UNK]"]),                                  # unassigned (Cn) is kept (HF fast)
    ("hello [MASK] [mask]", ["hello", "[MASK]", "[", "mask", "]"]),  # literal special token kept whole
])
def test_wordpiece_uncased_tokenize(bert, text, tokens):
    assert bert.tokenize(text) == tokens


@pytest.mark.parametrize("config, tokens", [
    ({"do_lower_case": False}, ["Cafe", "[UNK]", "café"]),          # HF: strip_accents follows lower-casing
    ({"do_lower_case": False, "strip_accents": True}, ["Cafe", "Cafe", "cafe"]),
    ({"do_lower_case": True, "strip_accents": False}, ["cafe", "café", "café"]),
])
def test_wordpiece_casing_and_accent_settings(tmp_path, config, tokens):
    tok = load_tokenizer(write_wordpiece(tmp_path, config=config))
    assert tok.tokenize("Cafe Café café") == tokens


def test_wordpiece_chinese_chars_setting(tmp_path):
    tok = load_tokenizer(write_wordpiece(tmp_path, config={"tokenize_chinese_chars": False}))
    assert tok.tokenize("東京 東") == ["[UNK]", "東"]               # '##京' is not in the vocab


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 150))
def test_wordpiece_words_over_100_chars_are_unk(bert, n):
    assert bert.tokenize("a" * n) == (["[UNK]"] if n > 100 else ["a"] + ["##a"] * (n - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("abcAB,.!東 \t", max_size=12), max_size=6))
def test_wordpiece_decode_gives_back_the_normalized_words(bert, chunks):
    text = " ".join(chunks)
    ids, _ = bert.encode(text, max_length=10**6)
    assert bert.decode(ids).split() == bert.split_words(bert.normalize(text))


def test_wordpiece_pair_layout_and_token_types(bert):
    ids, types = bert.encode("hello world", "the fox")
    v = bert.vocab
    assert ids == [v["[CLS]"], v["hello"], v["world"], v["[SEP]"], v["the"], v["fox"], v["[SEP]"]]
    assert types == [0, 0, 0, 0, 1, 1, 1]
    assert (bert.cls_token_id, bert.sep_token_id, bert.pad_token_id, bert.vocab_size) == (2, 3, 0, len(WORDPIECE_VOCAB))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), st.integers(3, 70))
def test_wordpiece_truncation_keeps_longest_first_prefixes(bert, n_a, n_b, max_length):
    ids, types = bert.encode("a " * n_a, "b " * n_b, max_length=max_length)
    if not n_b:                                                      # an empty second text is no pair
        assert len(ids) == min(n_a + 2, max_length) and set(types) == {0}
        return
    keep_a, keep_b = one_at_a_time(n_a, n_b, max_length - 3)
    a, b, cls, sep = bert.vocab["a"], bert.vocab["b"], bert.cls_token_id, bert.sep_token_id
    assert ids == [cls] + [a] * keep_a + [sep] + [b] * keep_b + [sep]
    assert types == [0] * (keep_a + 2) + [1] * (keep_b + 1)


# ----------------------------------------------------------------------------- errors and loading

@pytest.mark.parametrize("text_b, max_length", [(None, 1), ("fox", 2), (None, 0), (None, "512"), (None, 3.0)])
def test_max_length_too_small_for_special_tokens_raises(bert, text_b, max_length):
    with pytest.raises(ValueError, match="max_length"):
        bert.encode("hello", text_b, max_length=max_length)


def test_max_length_equal_to_special_tokens_keeps_only_them(bert, bpe):
    assert bert.encode("hello", "fox", max_length=3)[0] == [2, 3, 3]
    assert bpe.encode("lower", "aa", max_length=4)[0] == [0, 2, 2, 2]
    with pytest.raises(ValueError, match="4 special tokens"):
        bpe.encode("lower", "aa", max_length=3)


def test_load_tokenizer_picks_by_files(tmp_path):
    assert isinstance(load_tokenizer(write_bpe(tmp_path / "r")), ByteLevelBPETokenizer)
    assert isinstance(load_tokenizer(write_wordpiece(tmp_path / "b")), WordPieceTokenizer)
    both = write_wordpiece(write_bpe(tmp_path / "both"))
    with pytest.raises(ValueError, match="model_type"):
        load_tokenizer(both)
    (both / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert isinstance(load_tokenizer(both), WordPieceTokenizer)
    (both / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert isinstance(load_tokenizer(both), ByteLevelBPETokenizer)


def test_load_tokenizer_missing_files_lists_what_it_expects(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")                       # merges.txt missing
    with pytest.raises(FileNotFoundError, match=r"vocab\.json \+ merges\.txt .* vocab\.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_tokenizer(tmp_path / "absent")


def test_bad_vocab_and_merges_are_reported_with_their_file(tmp_path):
    folder = write_bpe(tmp_path, config={"mask_token": "<MASK>"})
    with pytest.raises(ValueError, match=r"mask_token '<MASK>' is not in the vocabulary of .*vocab\.json"):
        load_tokenizer(folder)
    folder = write_bpe(tmp_path / "m", merges=["l o", "lo w x"])
    with pytest.raises(ValueError, match=r"merges\.txt:3: expected 'left right'"):
        load_tokenizer(folder)


def test_mask_lstrip_follows_tokenizer_config(tmp_path):
    config = {"added_tokens_decoder": {"4": {"content": "<mask>", "lstrip": False}}}
    tok = load_tokenizer(write_bpe(tmp_path, config=config))
    assert tok.tokenize("a <mask>") == ["a", "Ġ", "<mask>"]
