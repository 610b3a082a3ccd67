"""Tokenizers of BERT-family (WordPiece) and RoBERTa-family (byte-level BPE) checkpoints.

Plain Python, no Hugging Face libraries, and the same `input_ids` / `token_type_ids` as the
Hugging Face *fast* tokenizer of the checkpoint (what `AutoTokenizer` returns; in transformers
v5 also what `BertTokenizer` / `RobertaTokenizer` are), truncation included:

    tok = load_tokenizer("checkpoints/roberta-base")      # vocab.json + merges.txt, vocab.txt or spm.model
    input_ids, token_type_ids = tok.encode("A man plays.", "Someone plays.", max_length=128)

Where the old pure-Python ("slow") Hugging Face tokenizers disagree with the fast ones, we follow
the fast ones and say so at the line that decides. One known difference remains: for BERT, the
fast tokenizer classifies characters (punctuation, control, accents) with Unicode 8.0 tables, we
with Python's `unicodedata`, so ~500 rare-script code points added since Unicode 9.0 can differ.

DeBERTa-v3's SentencePiece `spm.model` (SentencePieceTokenizer) follows the sentencepiece library
itself, which the slow `DebertaV2Tokenizer` calls. The fast one differs around unknown characters
that the normalizer changes or that sit next to a changed one ('½' -> '1⁄2', 'Ã³' -> 'Ã3'), and in
transformers v5 it ignores byte_fallback (unknown characters become [UNK], not `<0xNN>` bytes).
"""
import array
import contextlib
import functools
import itertools
import json
import os
import re
import struct
import sys
import unicodedata


def longest_first(len_a, len_b, budget):
    """How many tokens of each sequence to keep so that together they fit `budget`.

    Hugging Face's `longest_first` strategy as the fast (Rust) tokenizers implement it: the
    longer sequence is cut first; once both must shrink they share the budget, and an odd
    token goes to the longer one (to the second on a tie). (The slow Python tokenizers give
    that odd token to the first sequence instead.)
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    short, long = min(len_a, len_b), max(len_a, len_b)
    long = max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if len_a > len_b else (short, long)


@contextlib.contextmanager
def _reading(path):
    """A tokenizer file that is not UTF-8 text (or not JSON) -> a ValueError naming the file."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason}); tokenizer files are UTF-8") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _read_json(path):
    if not os.path.exists(path):
        return {}
    with _reading(path), open(path, encoding="utf-8") as f:
        return json.load(f)


def _token_name(value):
    """Special tokens in tokenizer_config.json are strings or {"content": ...} dicts."""
    return value["content"] if isinstance(value, dict) else value


class _Tokenizer:
    """What both tokenizers share: vocabulary lookups, special tokens in text, truncation."""

    def __init__(self, vocab, unk_token, cls_token, sep_token, pad_token, mask_token, source, lstrip_tokens=()):
        self.vocab = vocab                                     # token -> id
        self.source = source                                   # the file the vocabulary was read from
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.vocab_size = len(vocab)
        self.special_tokens = dict(unk=unk_token, cls=cls_token, sep=sep_token, pad=pad_token, mask=mask_token)
        for role, token in self.special_tokens.items():
            if token not in vocab:
                raise ValueError(f"{role}_token {token!r} is not in the vocabulary of {source}")
            setattr(self, f"{role}_token_id", vocab[token])
        self.special_ids = {vocab[t] for t in self.special_tokens.values()}
        # Text that spells a special token ('<mask>', '[SEP]') becomes that token, as in Hugging Face;
        # tokens in `lstrip_tokens` (RoBERTa's '<mask>') also swallow the whitespace before them.
        alternatives = [(f"[{_whitespace_class()}]*" if t in lstrip_tokens else "") + re.escape(t)
                        for t in sorted(set(self.special_tokens.values()), key=len, reverse=True)]
        self.special_pattern = re.compile(f"({'|'.join(alternatives)})")

    def tokenize(self, text):
        """Text -> tokens (strings), without the special tokens `encode` adds."""
        tokens = []
        for i, part in enumerate(self.special_pattern.split(text)):  # text, special, text, ..., text
            if i % 2:
                tokens.append(part.strip())
            elif part:
                tokens += self.tokenize_text(part)
        return tokens

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def num_special_tokens(self, pair):
        return 3 if pair else 2

    def build_inputs(self, a, b):
        """BERT's layout (WordPiece and DeBERTa-v3's SentencePiece): `[CLS] A [SEP]` and
        `[CLS] A [SEP] B [SEP]`, token_type_ids 0 up to and including the first [SEP], 1 after it.
        RoBERTa's tokenizer overrides both."""
        ids = [self.cls_token_id, *a, self.sep_token_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_token_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def encode(self, text_a, text_b=None, max_length=512):
        """Token ids with special tokens, cut to `max_length` -> (input_ids, token_type_ids).

        An empty `text_b` counts as no second sequence, as in Hugging Face.
        """
        a = self.convert_tokens_to_ids(self.tokenize(text_a))
        b = self.convert_tokens_to_ids(self.tokenize(text_b)) if text_b else None
        n_special = self.num_special_tokens(pair=b is not None)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < n_special:
            raise ValueError(f"max_length={max_length!r} cannot hold the {n_special} special tokens of a "
                             f"{'pair' if b is not None else 'single sequence'}; use an int >= {n_special}")
        if b is None:
            return self.build_inputs(a[:max_length - n_special], None)
        keep_a, keep_b = longest_first(len(a), len(b), max_length - n_special)
        return self.build_inputs(a[:keep_a], b[:keep_b])


# --------------------------------------------------------------------------- RoBERTa / GPT-2

@functools.cache
def bytes_to_unicode():
    """Map each of the 256 bytes to a printable character (GPT-2), so BPE works on text, not bytes.

    Printable Latin-1 bytes map to themselves; the other 68 go to chr(256), chr(257), ...
    in byte order (so a space, byte 32, becomes 'Ġ' = chr(288)).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


@functools.cache
def _category_classes():
    """Regex class bodies ('a-zà-ö...') of all code points, by the first letter of their category."""
    classes = {}
    for major, run in itertools.groupby(range(sys.maxunicode + 1), key=lambda cp: unicodedata.category(chr(cp))[0]):
        run = list(run)                                        # consecutive code points, same major category
        classes[major] = classes.get(major, "") + f"{re.escape(chr(run[0]))}-{re.escape(chr(run[-1]))}"
    return classes


def _whitespace_class():
    r"""Unicode White_Space (what Rust and the `regex` module call \s): \t-\r, U+0085 and Z*."""
    return r"\t-\r\x85" + _category_classes()["Z"]


@functools.cache
def gpt2_pattern():
    r"""GPT-2's pre-tokenizing regex in stdlib `re`, which lacks \p{L} and \p{N}.

    GPT-2 (and Hugging Face's ByteLevel pre-tokenizer) use
        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    We spell \p{L} (letters) and \p{N} (numbers) as classes built from `unicodedata`, and \s as
    Unicode White_Space (\t-\r, U+0085 and the Z* separators): `re`'s own \s also matches
    U+001C-U+001F, which the original regex treats as symbols.
    """
    L, N, S = _category_classes()["L"], _category_classes()["N"], _whitespace_class()
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


class ByteLevelBPETokenizer(_Tokenizer):
    """RoBERTa's (and GPT-2's) byte-level BPE from `vocab.json` and `merges.txt`.

    Text -> regex pieces -> UTF-8 bytes -> one printable char per byte -> BPE merges.
    Layout: `<s> A </s>` and `<s> A </s></s> B </s>`; token_type_ids are all 0.
    """

    def __init__(self, vocab_file, merges_file, add_prefix_space=False, unk_token="<unk>", cls_token="<s>",
                 sep_token="</s>", pad_token="<pad>", mask_token="<mask>", mask_lstrip=True):
        with _reading(vocab_file), open(vocab_file, encoding="utf-8") as f:
            vocab = json.load(f)                               # token -> id
        super().__init__(vocab, unk_token, cls_token, sep_token, pad_token, mask_token, vocab_file,
                         lstrip_tokens=[mask_token] if mask_lstrip else [])
        self.merge_ranks = {}                                  # (left, right) -> rank, lower merges first
        with _reading(merges_file), open(merges_file, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line or line.startswith("#version"):
                    continue
                pair = tuple(line.split(" "))
                if len(pair) != 2:
                    raise ValueError(f"{merges_file}:{line_no}: expected 'left right', got {line!r}")
                self.merge_ranks.setdefault(pair, len(self.merge_ranks))
        self.add_prefix_space = add_prefix_space
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pattern = gpt2_pattern()
        self.cache = {}                                        # piece -> its BPE tokens

    def bpe(self, piece):
        """Merge the characters of one regex piece, always the adjacent pair of lowest rank first."""
        if piece in self.cache:
            return self.cache[piece]
        word = list(piece)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.merge_ranks.get(p, float("inf")))
            if best not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(word):                               # merge every occurrence, left to right
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[piece] = word
        return word

    def tokenize_text(self, text):
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
        tokens = []
        for piece in self.pattern.findall(text):
            # A byte missing from the vocabulary is dropped, as the fast tokenizer does (the slow one
            # gives <unk>); real byte-level vocabularies hold all 256.
            chars = "".join(c for c in map(self.byte_encoder.get, piece.encode("utf-8")) if c in self.vocab)
            tokens.extend(self.bpe(chars))
        return tokens

    def num_special_tokens(self, pair):
        return 4 if pair else 2

    def build_inputs(self, a, b):
        ids = [self.cls_token_id, *a, self.sep_token_id]
        if b is not None:
            ids += [self.sep_token_id, *b, self.sep_token_id]
        return ids, [0] * len(ids)

    def decode(self, ids, skip_special_tokens=True):
        """Ids back to text: the inverse of `tokenize` when every byte is in the vocabulary."""
        tokens = [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        data = bytes(self.byte_decoder[c] for c in "".join(tokens) if c in self.byte_decoder)
        return data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- BERT

def _is_control(ch):
    """Cc, Cf, Co, Cs but not \\t\\n\\r. Unassigned code points (Cn) are kept, as the fast tokenizer does."""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch):
    """BERT's punctuation: every non-alphanumeric ASCII symbol (so '$', '^', '`') and Unicode P*."""
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch)[0] == "P"


def _is_chinese_char(cp):
    """CJK ideographs, which BERT makes words of their own (Hangul, kana are ordinary letters).

    The ranges of Hugging Face's Rust normalizer, which starts Extension E at U+2B920 where the
    Python one says U+2B820; U+2B820-U+2B91F are therefore not split off.
    """
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer(_Tokenizer):
    """BERT's tokenizer from `vocab.txt`: clean and split text into words, then WordPiece.

    Layout: `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, token_type_ids 0 up to and including
    the first [SEP], 1 after it.
    """

    def __init__(self, vocab_file, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
                 unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                 mask_token="[MASK]", max_input_chars_per_word=100):
        vocab = {}
        with _reading(vocab_file), open(vocab_file, encoding="utf-8") as f:
            for index, line in enumerate(f):
                vocab[line.rstrip("\n")] = index               # a repeated token keeps its last index
        super().__init__(vocab, unk_token, cls_token, sep_token, pad_token, mask_token, vocab_file)
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word

    def normalize(self, text):
        """Drop control chars, NUL and U+FFFD; whitespace -> ' '; space out CJK; strip accents; lower."""
        text = "".join(" " if ch.isspace() else ch for ch in text if ch != "\ufffd" and not _is_control(ch))
        if self.tokenize_chinese_chars:
            text = "".join(f" {ch} " if _is_chinese_char(ord(ch)) else ch for ch in text)
        if self.strip_accents:                                  # NFD splits 'é' into 'e' + U+0301 (Mn)
            text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
        if self.do_lower_case:                                  # char by char, like Rust: 'Σ' -> 'σ', never 'ς'
            text = "".join(ch.lower() for ch in text)
        return text

    def split_words(self, text):
        """Split on whitespace, and make every punctuation char a word of its own."""
        words = []
        for chunk in text.split():
            word = ""
            for ch in chunk:
                if _is_punctuation(ch):
                    words += [word, ch] if word else [ch]
                    word = ""
                else:
                    word += ch
            if word:
                words.append(word)
        return words

    def wordpiece(self, word):
        """Greedy longest-match-first: 'unaffable' -> ['un', '##aff', '##able'], or ['[UNK]']."""
        if len(word) > self.max_input_chars_per_word:
            return [self.special_tokens["unk"]]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:                                              # no prefix of the rest is in the vocab
                return [self.special_tokens["unk"]]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize_text(self, text):
        return [piece for word in self.split_words(self.normalize(text)) for piece in self.wordpiece(word)]

    def decode(self, ids, skip_special_tokens=True):
        """Ids back to (normalized) text: pieces joined by spaces, '##' continuations glued on."""
        tokens = [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        return " ".join(tokens).replace(" ##", "").strip()


# --------------------------------------------------------------------------- loading

BPE_MODEL_TYPES = {"roberta", "bart", "longformer"}              # <s> A </s></s> B </s>
WORDPIECE_MODEL_TYPES = {"bert", "distilbert", "electra", "mobilebert"}  # [CLS] A [SEP] B [SEP]
SPM_MODEL_TYPES = {"deberta-v2"}                                 # spm.model, [CLS] A [SEP] B [SEP]


def load_tokenizer(directory):
    """The tokenizer of a Hugging Face checkpoint folder, picked by the vocabulary files in it.

    `vocab.json` + `merges.txt` -> ByteLevelBPETokenizer; `vocab.txt` -> WordPieceTokenizer;
    `spm.model` (DeBERTa-v3, model_type "deberta-v2") -> SentencePieceTokenizer.
    Settings come from `tokenizer_config.json`; `config.json`'s model_type breaks a tie.
    """
    path = lambda name: os.path.join(directory, name)
    if os.path.exists(path("spm.model")) and (_read_json(path("config.json")).get("model_type") in SPM_MODEL_TYPES
                                             or not any(map(os.path.exists, map(path, ("vocab.json", "vocab.txt"))))):
        return _load_sentencepiece(directory)
    has_bpe = os.path.exists(path("vocab.json")) and os.path.exists(path("merges.txt"))
    has_wordpiece = os.path.exists(path("vocab.txt"))
    model_type = _read_json(path("config.json")).get("model_type")
    config = _read_json(path("tokenizer_config.json"))
    if has_bpe and has_wordpiece:
        if model_type not in BPE_MODEL_TYPES | WORDPIECE_MODEL_TYPES:
            raise ValueError(f"{directory} holds both vocab.json + merges.txt and vocab.txt, and config.json's "
                             f"model_type={model_type!r} does not say which to use")
        has_bpe = model_type in BPE_MODEL_TYPES
    specials = {f"{role}_token": _token_name(config[f"{role}_token"])
                for role in ("unk", "cls", "sep", "pad", "mask") if config.get(f"{role}_token")}
    if has_bpe:                                                # does '<mask>' swallow the space before it?
        mask = specials.get("mask_token", "<mask>")
        entries = [config.get("mask_token"), *config.get("added_tokens_decoder", {}).values()]
        flags = [e.get("lstrip", False) for e in entries if isinstance(e, dict) and e.get("content") == mask]
        return ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"), mask_lstrip=flags[0] if flags else True,
                                     add_prefix_space=config.get("add_prefix_space", False), **specials)
    if has_wordpiece:
        return WordPieceTokenizer(path("vocab.txt"), do_lower_case=config.get("do_lower_case", True),
                                  strip_accents=config.get("strip_accents"),
                                  tokenize_chinese_chars=config.get("tokenize_chinese_chars", True), **specials)
    found = sorted(os.listdir(directory)) if os.path.isdir(directory) else "no such directory"
    raise FileNotFoundError(f"no tokenizer in {directory}: expected vocab.json + merges.txt (RoBERTa/GPT-2 "
                            f"byte-level BPE), vocab.txt (BERT WordPiece) or spm.model (DeBERTa-v3 "
                            f"SentencePiece); found {found}")


# --------------------------------------------------------------------------- DeBERTa-v3 / SentencePiece
#
# DeBERTa-v3 ships `spm.model`, a SentencePiece unigram model: a protobuf (`sentencepiece.ModelProto`)
# holding the pieces with their log-probabilities, the trainer settings and a normalizer whose
# character map is a Darts-clone double-array trie. We read all three with a few lines each.

def _read_varint(data, pos):
    """A protobuf base-128 varint at data[pos] -> (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("protobuf: the data ends inside a varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def read_protobuf(data):
    """The fields of one serialized protobuf message -> [(field_number, value), ...] in wire order.

    Wire types: 0 varint -> int, 1 fixed64 -> 8 bytes, 2 length-delimited -> bytes (a string,
    bytes, or a nested message to read again), 5 fixed32 -> 4 bytes. Groups (3, 4) are not used
    by sentencepiece and are refused.
    """
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = bytes(data[pos:pos + size]), pos + size
        elif wire_type == 2:
            size, pos = _read_varint(data, pos)
            value, pos = bytes(data[pos:pos + size]), pos + size
        else:
            raise ValueError(f"protobuf: field {number} has wire type {wire_type}; only 0, 1, 2 and 5 are supported")
        if pos > len(data):
            raise ValueError(f"protobuf: field {number} runs past the end of the data")
        fields.append((number, value))
    return fields


def _int32(varint):
    """An int32 field: negative values travel as 10-byte two's-complement varints."""
    return varint - (1 << 64) if varint >= 1 << 63 else varint


def _float32(four_bytes):
    return struct.unpack("<f", four_bytes)[0]


def _round_float32(x):
    """x rounded to the nearest float32, as C stores a double into a float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# sentencepiece_model.proto: field number -> (name, reader, default), for the fields we use.
_PIECE_FIELDS = {1: ("piece", bytes.decode, ""), 2: ("score", _float32, 0.0), 3: ("type", int, 1)}
_TRAINER_FIELDS = {3: ("model_type", int, 1), 4: ("vocab_size", _int32, 8000),
                   24: ("treat_whitespace_as_suffix", bool, False), 35: ("byte_fallback", bool, False),
                   40: ("unk_id", _int32, 0), 41: ("bos_id", _int32, 1), 42: ("eos_id", _int32, 2),
                   43: ("pad_id", _int32, -1), 44: ("unk_surface", bytes.decode, " \u2047 "),
                   45: ("unk_piece", bytes.decode, "<unk>"), 46: ("bos_piece", bytes.decode, "<s>"),
                   47: ("eos_piece", bytes.decode, "</s>"), 48: ("pad_piece", bytes.decode, "<pad>")}
_NORMALIZER_FIELDS = {1: ("name", bytes.decode, ""), 2: ("precompiled_charsmap", bytes, b""),
                      3: ("add_dummy_prefix", bool, True), 4: ("remove_extra_whitespaces", bool, True),
                      5: ("escape_whitespaces", bool, True)}
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6   # SentencePiece.Type


def _read_message(data, spec):
    """One message -> {name: value} for the fields in `spec`, defaults for those absent (last one wins)."""
    message = {name: default for name, _, default in spec.values()}
    for number, value in read_protobuf(data):
        if number in spec:
            name, read, _ = spec[number]
            message[name] = read(value)
    return message


def read_spm_model(data):
    """A serialized sentencepiece ModelProto -> (pieces, trainer_spec, normalizer_spec).

    ModelProto fields: 1 pieces (repeated SentencePiece: 1 piece, 2 score as fixed32 float,
    3 type), 2 trainer_spec, 3 normalizer_spec. Each piece is a dict(piece, score, type).
    """
    pieces, trainer, normalizer = [], b"", b""
    for number, value in read_protobuf(data):                  # a message given twice is merged, as in
        if number == 1:                                        # protobuf: its bytes are concatenated
            pieces.append(_read_message(value, _PIECE_FIELDS))
        elif number == 2:
            trainer += value
        elif number == 3:
            normalizer += value
    return pieces, _read_message(trainer, _TRAINER_FIELDS), _read_message(normalizer, _NORMALIZER_FIELDS)


class DoubleArray:
    """A Darts-clone double-array trie, read from its array of 32-bit units.

    Each unit packs: bit 8 has_leaf, bits 0-7 + bit 31 the label (a leaf's label has bit 31 set, so
    it never equals a byte), bits 10-31 the offset to the children (shifted left by 8 when bit 9
    is set), and, in a leaf, bits 0-30 the value. The child of node `i` for byte `b` sits at
    `i ^ offset(i) ^ b` and is real only if its label is `b`.
    """

    def __init__(self, units):
        self.units = units                                     # array of uint32

    def _offset(self, unit):
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    def common_prefix_search(self, key, start=0):
        """All keys that are prefixes of key[start:] -> [(value, length in bytes), ...], shortest first."""
        results, units = [], self.units
        node = self._offset(units[0])
        for i in range(start, len(key)):
            node ^= key[i]
            if node >= len(units) or units[node] & 0x800000FF != key[i]:
                break
            unit = units[node]
            node ^= self._offset(unit)
            if (unit >> 8) & 1:                                # has_leaf: a key ends here
                results.append((units[node] & 0x7FFFFFFF, i + 1 - start))
        return results

    def exact_match_search(self, key):
        """The value stored for `key` (bytes), or -1."""
        matches = [value for value, length in self.common_prefix_search(key) if length == len(key)]
        return matches[0] if matches else -1


def _decode_utf8_char(data, pos):
    """sentencepiece's DecodeUTF8 -> (length, valid). Overlong forms and surrogates are invalid;
    an invalid byte counts as one character (U+FFFD); a literal U+FFFD is valid."""
    lead = data[pos]
    if lead < 0x80:
        return 1, True
    for size, mask, marker, smallest in ((2, 0xE0, 0xC0, 0x80), (3, 0xF0, 0xE0, 0x800), (4, 0xF8, 0xF0, 0x10000)):
        if lead & mask == marker:
            tail = data[pos + 1:pos + size]
            if len(tail) == size - 1 and all(b & 0xC0 == 0x80 for b in tail):
                cp = lead & (0x7F >> size)
                for b in tail:
                    cp = cp << 6 | b & 0x3F
                if cp >= smallest and (cp < 0xD800 or 0xE000 <= cp <= 0x10FFFF):
                    return size, True
            break
    return 1, False


SPACE = "\u2581"                                               # '▁', SentencePiece's visible space


class SentencePieceTokenizer(_Tokenizer):
    """DeBERTa-v3's tokenizer from `spm.model`: SentencePiece normalization + unigram Viterbi.

    The same ids as the sentencepiece library's `encode(text)` (unigram models; normalizer.cc and
    unigram_model.cc `EncodeOptimized`), then DeBERTa-v2's layout: `[CLS] A [SEP]` and
    `[CLS] A [SEP] B [SEP]`, token_type_ids 0 up to and including the first [SEP], 1 after it.
    `[MASK]` is not a piece of DeBERTa-v3's spm.model: it is added after the pieces (id 128000).

    Departures from sentencepiece's code, none changing an id: pieces are looked up in a dict
    with a set of their prefixes rather than a double-array trie (same candidates, same order);
    path scores are compared as float32, as the library's builds do (see `viterbi`), not as the
    double sums its source reads. Hugging Face's `split_by_punct` option is not implemented.
    """

    def __init__(self, model_file, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                 mask_token="[MASK]", do_lower_case=False, added_tokens=None):
        with open(model_file, "rb") as f:
            data = f.read()
        try:
            pieces, self.trainer_spec, self.normalizer_spec = read_spm_model(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{model_file} is not a sentencepiece model: {e}") from None
        if self.trainer_spec["model_type"] != 1:
            kind = {2: "BPE", 3: "WORD", 4: "CHAR"}.get(self.trainer_spec["model_type"], "unknown")
            raise ValueError(f"{model_file} is a {kind} sentencepiece model (model_type="
                             f"{self.trainer_spec['model_type']}); only UNIGRAM (1) is supported")
        if not pieces:
            raise ValueError(f"{model_file} holds no pieces")
        self.pieces = pieces
        vocab = {}
        for i, p in enumerate(pieces):
            if p["piece"] in vocab or not p["piece"]:
                raise ValueError(f"{model_file}: piece {i} ({p['piece']!r}) is empty or repeated")
            vocab[p["piece"]] = i
        unk_ids = [i for i, p in enumerate(pieces) if p["type"] == UNKNOWN]
        if len(unk_ids) != 1:
            raise ValueError(f"{model_file} must have exactly one UNKNOWN piece, has {len(unk_ids)}")
        self.spm_unk_id = unk_ids[0]
        _add_tokens(vocab, pieces, dict(added_tokens or {}), mask_token, model_file)
        super().__init__(vocab, unk_token, cls_token, sep_token, pad_token, mask_token, model_file)
        self.do_lower_case = do_lower_case

        # The lattice: NORMAL, USER_DEFINED and UNUSED pieces can match text (UNUSED ones are then skipped).
        self.matchable = {p["piece"]: i for i, p in enumerate(pieces) if p["type"] in (NORMAL, USER_DEFINED, UNUSED)}
        self.prefixes = {piece[:k] for piece in self.matchable for k in range(1, len(piece))}
        self.max_piece_chars = max(map(len, self.matchable), default=0)
        normal_scores = [p["score"] for p in pieces if p["type"] == NORMAL]
        self.min_score = min(normal_scores, default=3.4028234663852886e38)      # FLT_MAX if none
        self.max_score = max(normal_scores + [1.1754943508222875e-38])          # starts at FLT_MIN
        self.unk_score = _round_float32(self.min_score - 10.0)                   # kUnkPenalty
        self.byte_ids = {}
        if self.trainer_spec["byte_fallback"]:
            self.byte_ids = {b: vocab.get(f"<0x{b:02X}>") for b in range(256)}
            if None in self.byte_ids.values() or any(pieces[i]["type"] != BYTE for i in self.byte_ids.values()):
                raise ValueError(f"{model_file} has byte_fallback but not the 256 BYTE pieces <0x00>..<0xFF>")
        # Text is turned into these ids (an unknown span into spm's unk id): pieces text can
        # produce, plus the special tokens that `tokenize` splits out of the text.
        self.text_vocab = {p["piece"]: i for i, p in enumerate(pieces) if p["type"] in (NORMAL, USER_DEFINED, BYTE)}
        self.text_vocab.update({t: vocab[t] for t in self.special_tokens.values()})

        # Normalizer: user-defined pieces pass through untouched; the rest go through the charsmap.
        self.user_defined = {p["piece"].encode("utf-8") for p in pieces if p["type"] == USER_DEFINED}
        self.charsmap, self.charsmap_strings = _read_charsmap(self.normalizer_spec["precompiled_charsmap"], model_file)

    # -- normalizer.cc

    def normalize_prefix(self, data, pos):
        """Normalize the start of data[pos:] -> (replacement bytes, bytes consumed).

        A user-defined piece (longest) is kept as it is; else the longest charsmap rule; else the
        UTF-8 character itself, or U+FFFD for one byte of malformed UTF-8.
        """
        matched = [len(s) for s in self.user_defined if data.startswith(s, pos)]
        if matched:
            return data[pos:pos + max(matched)], max(matched)
        if self.charsmap is not None:
            rules = self.charsmap.common_prefix_search(data, pos)
            if rules:
                value, length = max(rules, key=lambda rule: rule[1])
                end = self.charsmap_strings.index(b"\0", value)
                return self.charsmap_strings[value:end], length
        length, valid = _decode_utf8_char(data, pos)
        return (data[pos:pos + length], length) if valid else ("\ufffd".encode("utf-8"), 1)

    def normalize(self, text):
        """Text (str or UTF-8 bytes) -> sentencepiece's normalized string ('▁' for spaces).

        Charsmap rules (nmt_nfkc: NFKC, whitespace and control characters mapped); with
        remove_extra_whitespaces, leading and trailing spaces are dropped and runs of spaces become
        one; add_dummy_prefix puts '▁' in front; escape_whitespaces writes ' ' as '▁'.
        """
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        spec = self.normalizer_spec
        remove_extra, escape = spec["remove_extra_whitespaces"], spec["escape_whitespaces"]
        space = SPACE.encode("utf-8") if escape else b" "
        pos = 0
        while remove_extra and pos < len(data):                # heading spaces
            piece, length = self.normalize_prefix(data, pos)
            if piece != b" ":
                break
            pos += length
        if pos == len(data):
            return ""
        out = bytearray()
        suffix = self.trainer_spec["treat_whitespace_as_suffix"]
        if spec["add_dummy_prefix"] and not suffix:
            out += space
        is_prev_space = remove_extra
        while pos < len(data):
            piece, length = self.normalize_prefix(data, pos)
            if is_prev_space:
                piece = piece.lstrip(b" ")
            if piece:
                out += piece.replace(b" ", space) if escape else piece
                is_prev_space = piece.endswith(b" ")
            pos += length
            if not remove_extra:
                is_prev_space = False
        while remove_extra and out.endswith(space):            # trailing spaces
            del out[-len(space):]
        if spec["add_dummy_prefix"] and suffix:
            out += space
        return out.decode("utf-8")

    # -- unigram_model.cc

    def viterbi(self, normalized):
        """Best-scoring segmentation of a normalized string -> [(piece, id), ...] (EncodeOptimized).

        Left to right over start positions, each piece starting there relaxes the best path ending
        where it ends (a strict `>`, so on a tie the path found first, the one with the earlier
        last-piece start, stays). Path scores are float32 sums, rounded before they are compared:
        that is what the library's builds do (it breaks the ties of '2000' -> '2' '0' '00' in long
        sentences the same way; comparing the double sums, as the C++ source reads, does not). A
        user-defined piece scores `bytes * max_score - 0.1`, a bonus that makes it win; a
        character no piece starts with becomes an unknown node scored `min_score - 10`.
        """
        n = len(normalized)
        best = [0.0] * (n + 1)                                 # best path score ending at each position
        start = [-1] * (n + 1)                                 # ... where its last piece starts
        piece_id = [-1] * (n + 1)                              # ... and that piece's id
        for s in range(n):
            here, has_single = best[s], False
            for end in range(s + 1, min(n, s + self.max_piece_chars) + 1):
                candidate = normalized[s:end]
                i = self.matchable.get(candidate)
                if i is not None and self.pieces[i]["type"] != UNUSED:
                    piece = self.pieces[i]
                    score = piece["score"]
                    if piece["type"] == USER_DEFINED:
                        score = _round_float32(_round_float32(len(candidate.encode("utf-8")) * self.max_score) - 0.1)
                    score = _round_float32(score + here)
                    if start[end] == -1 or score > best[end]:
                        best[end], start[end], piece_id[end] = score, s, i
                    has_single = has_single or end == s + 1
                if candidate not in self.prefixes:
                    break
            if not has_single:
                score = _round_float32(self.unk_score + here)
                if start[s + 1] == -1 or score > best[s + 1]:
                    best[s + 1], start[s + 1], piece_id[s + 1] = score, s, self.spm_unk_id
        result, end = [], n
        while end > 0:
            result.append((normalized[start[end]:end], piece_id[end]))
            end = start[end]
        return result[::-1]

    def encode_pieces(self, text):
        """Text -> [(piece, id), ...] exactly as sentencepiece's `encode`: unknown characters become
        their UTF-8 bytes' `<0xNN>` pieces with byte_fallback, else runs of them one unknown piece."""
        if self.do_lower_case:
            text = text.lower()
        pieces = []
        for piece, i in self.viterbi(self.normalize(text)):
            if i != self.spm_unk_id:
                pieces.append((piece, i))
            elif self.byte_ids:
                pieces += [(f"<0x{b:02X}>", self.byte_ids[b]) for b in piece.encode("utf-8")]
            elif pieces and pieces[-1][1] == self.spm_unk_id:
                pieces[-1] = (pieces[-1][0] + piece, i)
            else:
                pieces.append((piece, i))
        return pieces

    def encode_as_ids(self, text):
        """Text -> ids, no special tokens: sentencepiece's `encode(text)`."""
        return [i for _, i in self.encode_pieces(text)]

    def tokenize_text(self, text):
        return [piece for piece, _ in self.encode_pieces(text)]

    def convert_tokens_to_ids(self, tokens):
        # An unknown span ('€' in a model without it) is spm's unk even where it spells a piece that
        # text cannot produce (a CONTROL or UNUSED piece), as in sentencepiece.
        return [self.text_vocab.get(t, self.spm_unk_id) for t in tokens]

    def decode(self, ids, skip_special_tokens=True):
        """Ids back to text as sentencepiece decodes: '▁' -> ' ', runs of `<0xNN>` pieces joined into
        UTF-8 (U+FFFD per malformed byte), control pieces dropped, the unknown piece as ' ⁇ ', and
        the leading '▁' of the first piece dropped (with remove_extra_whitespaces, of every piece
        until some text has come out)."""
        spec = self.normalizer_spec
        text, run = [], bytearray()                            # decoded parts; pending <0xNN> bytes
        is_bos, bos_space_seen = True, False

        def flush():
            pos = 0
            while pos < len(run):
                length, valid = _decode_utf8_char(run, pos)
                text.append(run[pos:pos + length].decode("utf-8") if valid else "\ufffd")
                pos += length
            run.clear()

        for i in ids:
            if skip_special_tokens and i in self.special_ids:
                continue
            if i >= len(self.pieces):                          # a token added beyond the model ('[MASK]')
                flush()
                text.append(self.id_to_token[i])
                continue
            piece, kind = self.pieces[i]["piece"], self.pieces[i]["type"]
            if kind == BYTE:
                run.append(int(piece[3:5], 16))
                continue
            flush()
            is_bos = is_bos and not bos_space_seen and not "".join(text)
            bos_space_seen = False
            if kind == CONTROL:
                continue
            if kind == UNKNOWN:
                text.append(self.trainer_spec["unk_surface"])
                continue
            if is_bos and (spec["add_dummy_prefix"] or spec["remove_extra_whitespaces"]) and piece.startswith(SPACE):
                piece = piece[1:]
                bos_space_seen = not spec["remove_extra_whitespaces"]
            text.append(piece.replace(SPACE, " "))
        flush()
        return "".join(text)


def _add_tokens(vocab, pieces, added, mask_token, model_file):
    """Put the tokens added beyond the model (DeBERTa-v3's '[MASK]' = 128000) into `vocab`: `added`
    {id: token} from tokenizer_config.json's added_tokens_decoder, else the mask token right after
    the pieces. An id may not name another piece."""
    if mask_token not in vocab and mask_token not in added.values():
        added[len(pieces)] = mask_token
    for i, token in sorted(added.items()):
        if vocab.get(token, i) != i:
            raise ValueError(f"added token {token!r} is given id {i}, but it is piece {vocab[token]} "
                             f"of {model_file}")
        if token not in vocab and i < len(pieces):
            raise ValueError(f"added token {token!r} cannot take id {i}: that is piece {pieces[i]['piece']!r} "
                             f"of {model_file}")
        vocab[token] = i


def _read_charsmap(blob, model_file):
    """The normalizer's precompiled_charsmap -> (DoubleArray trie or None, the NUL-terminated replacement
    strings). Layout: <trie size: uint32 LE><trie units><strings>."""
    if not blob:
        return None, b""
    trie_size = struct.unpack("<I", blob[:4])[0] if len(blob) > 4 else len(blob)
    if trie_size >= len(blob) or trie_size % 4:
        raise ValueError(f"{model_file}: the normalizer's precompiled_charsmap is broken")
    trie = DoubleArray(array.array("I", blob[4:4 + trie_size]))
    if sys.byteorder == "big":
        trie.units.byteswap()
    return trie, blob[4 + trie_size:]


def _load_sentencepiece(directory):
    """SentencePieceTokenizer of a DeBERTa-v3 folder: spm.model + tokenizer_config.json.

    Special tokens, `do_lower_case` and the added tokens' ids (`added_tokens_decoder`, where
    DeBERTa-v3 puts '[MASK]' at 128000) come from tokenizer_config.json; without one, DeBERTa-v3's.
    """
    config = _read_json(os.path.join(directory, "tokenizer_config.json"))
    if config.get("split_by_punct"):
        raise ValueError(f"{directory}/tokenizer_config.json sets split_by_punct=true, which this tokenizer does "
                         f"not implement (DeBERTa-v3 uses false)")
    specials = {f"{role}_token": _token_name(config[f"{role}_token"])
                for role in ("unk", "cls", "sep", "pad", "mask") if config.get(f"{role}_token")}
    added = {int(i): _token_name(token) for i, token in config.get("added_tokens_decoder", {}).items()}
    return SentencePieceTokenizer(os.path.join(directory, "spm.model"), added_tokens=added,
                                  do_lower_case=config.get("do_lower_case", False), **specials)
