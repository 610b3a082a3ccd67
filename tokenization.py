"""Tokenizers of BERT-family (WordPiece) and RoBERTa-family (byte-level BPE) checkpoints.

Plain Python, no Hugging Face libraries, and the same `input_ids` / `token_type_ids` as the
Hugging Face *fast* tokenizer of the checkpoint (what `AutoTokenizer` returns; in transformers
v5 also what `BertTokenizer` / `RobertaTokenizer` are), truncation included:

    tok = load_tokenizer("checkpoints/roberta-base")      # vocab.json + merges.txt, or vocab.txt
    input_ids, token_type_ids = tok.encode("A man plays.", "Someone plays.", max_length=128)

Where the old pure-Python ("slow") Hugging Face tokenizers disagree with the fast ones, we follow
the fast ones and say so at the line that decides. One known difference remains: for BERT, the
fast tokenizer classifies characters (punctuation, control, accents) with Unicode 8.0 tables, we
with Python's `unicodedata`, so ~500 rare-script code points added since Unicode 9.0 can differ.
"""
import contextlib
import functools
import itertools
import json
import os
import re
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

    def convert_ids_to_tokens(self, ids):
        return [self.id_to_token[i] for i in ids]

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

    def num_special_tokens(self, pair):
        return 3 if pair else 2

    def build_inputs(self, a, b):
        ids = [self.cls_token_id, *a, self.sep_token_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_token_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def decode(self, ids, skip_special_tokens=True):
        """Ids back to (normalized) text: pieces joined by spaces, '##' continuations glued on."""
        tokens = [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        return " ".join(tokens).replace(" ##", "").strip()


# --------------------------------------------------------------------------- loading

BPE_MODEL_TYPES = {"roberta", "bart", "longformer"}              # <s> A </s></s> B </s>
WORDPIECE_MODEL_TYPES = {"bert", "distilbert", "electra", "mobilebert"}  # [CLS] A [SEP] B [SEP]


def load_tokenizer(directory):
    """The tokenizer of a Hugging Face checkpoint folder, picked by the vocabulary files in it.

    `vocab.json` + `merges.txt` -> ByteLevelBPETokenizer; `vocab.txt` -> WordPieceTokenizer.
    Settings come from `tokenizer_config.json`; `config.json`'s model_type breaks a tie.
    """
    path = lambda name: os.path.join(directory, name)
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
                            f"byte-level BPE) or vocab.txt (BERT WordPiece); found {found}")
