"""Tests for the SentencePiece (DeBERTa-v3) tokenizer in tokenization.py.

Fixtures: tests/fixtures/spm.model, a unigram model of 3,000 pieces trained once with the
sentencepiece library on GLUE RTE's training sentences, as DeBERTa-v3's spm.model is made
(nmt_nfkc normalization, byte_fallback, [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3); and
tests/fixtures/spm_identity.model, 1,000 pieces, identity normalizer, no byte fallback,
remove_extra_whitespaces off, the user-defined pieces '<url>', 'ﬁ', 'New York' and a control
piece '[MASK]'. EXPECTED_* are the library's `encode(text)` and `normalize(text)` of each
TORTURE text (sentencepiece 0.2.3), pasted here once; the tests need no sentencepiece.
"""
import json
import os
import pathlib
import shutil
import struct

import pytest
from hypothesis import given, settings, strategies as st

from encoder.tokenization import (BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, DoubleArray, SentencePieceTokenizer,
                          load_tokenizer, longest_first, read_protobuf, read_spm_model)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SPM_MODEL = os.path.join(FIXTURES, "spm.model")
SPM_IDENTITY = os.path.join(FIXTURES, "spm_identity.model")

TORTURE = [
    '',
    'Hello world.',
    '  leading and trailing  ',
    'multiple     spaces\tand\ttabs\nnew\nlines\r\n',
    '   ',
    '\t\n\r',
    'Café naïve résumé',
    'Café naïve x̀́̂̃',
    'ＦＵＬＬ－ＷＩＤＴＨ\u3000ｆｏｒｍｓ １２３ ｶﾀｶﾅ',
    '東京都 中文字符 日本語のテキスト 한국어',
    'emoji 😀👍🏽 👨\u200d👩\u200d👧 🇯🇵',
    'digits 0123456789 3.14159 1,000,000 ½ ² ① 2000-2010',
    'zero\u200bwidth\u200c\u200dchars\ufeff\u2060here\xad',
    'control \x00\x01\x07\x1b\x7f chars \x85 \u2028 \u2029',
    'ligatures ﬁ ﬂ ﬀ ﬃ Æ œ',
    'Roman Ⅻ ⅻ Ⅳ numerals',
    '\u3000\xa0\u2003 nbsp\xa0space',
    'Ünïcödé ÀÉÎÕÜ ß ẞ ı İ',
    "The U.S. Senate approved $1.5bn on 12/03/2005, didn't it?",
    'quotes “smart” ‘single’ « guillemets » — dash … ellipsis',
    'math ∑∫√∞≠≤ ± × ÷ µ Å Ω K ℃ ㎏',
    '� replacement and private \ue000',
    'Arabic مرحبا Hebrew שלום Thai สวัสดี Devanagari नमस्ते',
    '[CLS] [SEP] [PAD] [UNK] [MASK] <s> literal',
    'New York <url> ﬁne',
    '▁ already ▁▁escaped ▁',
    'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    'Unknownish ☃☃☃ ꙮꙮ',
    'ｶﾞｷﾞ ﾊﾟ Ｅ́ ÅÅ',
]
# sentencepiece 0.2.3: spm.model, encode(text) and normalize(text) of each TORTURE text
EXPECTED_SPM = [
    ([], ''),
    ([435, 465, 282, 513, 261], '▁Hello▁world.'),
    ([859, 271, 270, 264, 684, 359, 271], '▁leading▁and▁trailing'),
    ([1845, 290, 319, 1093, 260, 270, 264, 430, 307, 260, 387, 1322, 260], '▁multiple▁spaces▁and▁tabs▁new▁lines'),
    ([], ''),
    ([], ''),
    ([324, 283, 331, 199, 173, 264, 511, 199, 179, 419, 663, 199, 173, 260, 523, 199, 173], '▁Café▁naïve▁résumé'),
    ([324, 283, 331, 199, 173, 264, 511, 199, 179, 419, 264, 503, 208, 132, 208, 133, 208, 134, 208, 135],
     '▁Café▁naïve▁x̀́̂̃'),
    ([344, 877, 657, 657, 275, 814, 452, 521, 472, 676, 746, 260, 929, 429, 264, 231, 134, 175, 231, 134, 195, 231,
      134, 175, 231, 135, 142],
     '▁FULL-WIDTH▁forms▁123▁カタカナ'),
    ([264, 234, 161, 181, 232, 190, 176, 237, 135, 193, 264, 232, 188, 177, 234, 154, 139, 233, 177, 155, 235, 176,
      170, 264, 234, 155, 169, 234, 160, 176, 236, 174, 162, 231, 133, 178, 231, 135, 138, 231, 134, 177, 231, 134,
      189, 231, 135, 140, 264, 241, 153, 160, 238, 185, 177, 240, 154, 184],
     '▁東京都▁中文字符▁日本語のテキスト▁한국어'),
    ([484, 475, 485, 291, 264, 244, 163, 156, 132, 244, 163, 149, 145, 244, 163, 147, 193, 264, 244, 163, 149, 172,
      230, 132, 145, 244, 163, 149, 173, 230, 132, 145, 244, 163, 149, 171, 264, 244, 163, 139, 179, 244, 163, 139,
      185],
     '▁emoji▁😀👍🏽▁👨\u200d👩\u200d👧▁🇯🇵'),
    ([980, 298, 318, 260, 264, 381, 407, 397, 429, 431, 490, 434, 447, 443, 495, 542, 261, 407, 431, 407, 490, 495,
      638, 669, 669, 638, 230, 133, 136, 397, 724, 638, 2132, 275, 397, 381, 1481],
     '▁digits▁0123456789▁3.14159▁1,000,000▁1⁄2▁2▁1▁2000-2010'),
    ([264, 1026, 352, 264, 714, 272, 328, 264, 230, 132, 145, 330, 313, 260, 264, 230, 133, 164, 892, 316, 198,
      177],
     '▁zero▁width▁\u200dchars▁\u2060here\xad'),
    ([932, 264, 4, 1065, 286, 260, 264, 198, 137], '▁control▁\x00▁chars▁\x85'),
    ([703, 568, 283, 884, 260, 264, 895, 846, 264, 903, 390, 895, 264, 199, 138, 264, 201, 151],
     '▁ligatures▁fi▁fl▁ff▁ffi▁Æ▁œ'),
    ([1337, 264, 92, 452, 452, 264, 503, 291, 291, 388, 919, 2461, 284, 260], '▁Roman▁XII▁xii▁IV▁numerals'),
    ([264, 279, 307, 260, 290, 1093], '▁nbsp▁space'),
    ([264, 199, 160, 279, 199, 179, 297, 199, 186, 272, 199, 173, 264, 199, 132, 199, 141, 199, 146, 199, 153, 199,
      160, 264, 199, 163, 264, 229, 190, 162, 264, 200, 181, 264, 200, 180],
     '▁Ünïcödé▁ÀÉÎÕÜ▁ß▁ẞ▁ı▁İ'),
    ([278, 364, 261, 337, 261, 1501, 1828, 1098, 261, 490, 307, 279, 289, 929, 862, 381, 429, 862, 397, 596, 490,
      263, 848, 279, 276, 274, 334, 67],
     "▁The▁U.S.▁Senate▁approved▁$1.5bn▁on▁12/03/2005,▁didn't▁it?"),
    ([2170, 327, 264, 230, 132, 160, 260, 936, 274, 230, 132, 161, 264, 230, 132, 156, 260, 271, 319, 230, 132,
      157, 264, 198, 175, 264, 674, 550, 273, 627, 274, 260, 264, 198, 191, 264, 230, 132, 152, 1792, 374, 264,
      261, 261, 261, 264, 575, 291, 290, 260, 400],
     '▁quotes▁“smart”▁‘single’▁«▁guillemets▁»▁—▁dash▁...▁ellipsis'),
    ([624, 328, 264, 230, 140, 149, 230, 140, 175, 230, 140, 158, 230, 140, 162, 230, 141, 164, 230, 141, 168, 264,
      198, 181, 264, 199, 155, 264, 199, 187, 264, 210, 192, 264, 199, 137, 264, 210, 173, 354, 264, 198, 180, 395,
      264, 322, 298],
     '▁math▁∑∫√∞≠≤▁±▁×▁÷▁μ▁Å▁Ω▁K▁°C▁kg'),
    ([2412, 273, 427, 270, 1431, 264, 242, 132, 132], '▁replacement▁and▁private▁\ue000'),
    ([1088, 325, 264, 221, 137, 220, 181, 220, 177, 220, 172, 220, 171, 435, 307, 1214, 264, 219, 173, 219, 160,
      219, 153, 219, 161, 360, 420, 291, 264, 228, 188, 174, 228, 188, 171, 228, 188, 181, 228, 188, 174, 228, 188,
      152, 228, 188, 185, 716, 389, 311, 566, 313, 291, 264, 228, 168, 172, 228, 168, 178, 228, 168, 188, 228, 169,
      145, 228, 168, 168, 228, 169, 139],
     '▁Arabic▁مرحبا▁Hebrew▁שלום▁Thai▁สวัสดี▁Devanagari▁नमस्ते'),
    ([264, 95, 395, 657, 337, 97, 264, 95, 337, 502, 598, 97, 264, 95, 598, 378, 521, 97, 264, 95, 877, 501, 1142,
      97, 264, 95, 508, 378, 337, 1142, 97, 264, 64, 260, 66, 1584, 323],
     '▁[CLS]▁[SEP]▁[PAD]▁[UNK]▁[MASK]▁<s>▁literal'),
    ([422, 635, 264, 64, 338, 323, 66, 390, 448], '▁New▁York▁<url>▁fine'),
    ([655, 286, 1006, 264, 327, 297, 470, 268], '▁already▁escaped'),
    ([267, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283,
      283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283, 283],
     '▁aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
    ([364, 279, 2518, 609, 264, 230, 156, 135, 230, 156, 135, 230, 156, 135, 264, 238, 157, 178, 238, 157, 178],
     '▁Unknownish▁☃☃☃▁ꙮꙮ'),
    ([264, 231, 134, 176, 231, 134, 178, 264, 231, 135, 149, 264, 199, 141, 264, 199, 137, 199, 137], '▁ガギ▁パ▁É▁ÅÅ'),
]
# sentencepiece 0.2.3: spm_identity.model, encode(text) and normalize(text) of each TORTURE text
EXPECTED_SPM_IDENTITY = [
    ([], ''),
    ([137, 223, 28, 378, 10], '▁Hello▁world.'),
    ([8, 8, 615, 21, 23, 8, 383, 72, 21, 8, 8], '▁▁▁leading▁and▁trailing▁▁'),
    ([8, 34, 159, 16, 29, 32, 58, 8, 8, 8, 8, 704, 9, 3, 212, 3, 146, 45, 9, 3, 110, 67, 3, 470, 9, 3],
     '▁multiple▁▁▁▁▁spaces\tand\ttabs\nnew\nlines\r\n'),
    ([8, 8, 8, 8], '▁▁▁▁'),
    ([8, 3], '▁\t\n\r'),
    ([71, 22, 50, 3, 8, 261, 3, 127, 8, 26, 3, 9, 182, 3], '▁Café▁naïve▁résumé'),
    ([71, 22, 197, 3, 8, 261, 29, 3, 127, 8, 201, 3], '▁Café▁naïve▁x̀́̂̃'),
    ([8, 3, 8, 3, 8, 3], '▁ＦＵＬＬ－ＷＩＤＴＨ\u3000ｆｏｒｍｓ▁１２３▁ｶﾀｶﾅ'),
    ([8, 3, 8, 3, 8, 3, 8, 3], '▁東京都▁中文字符▁日本語のテキスト▁한국어'),
    ([8, 13, 161, 183, 29, 8, 3, 8, 3, 8, 3], '▁emoji▁😀👍🏽▁👨\u200d👩\u200d👧▁🇯🇵'),
    ([407, 42, 63, 9, 8, 106, 133, 149, 163, 176, 143, 3, 204, 164, 363, 10, 133, 176, 133, 143, 164, 280, 434,
      434, 8, 3, 8, 3, 8, 3, 184, 106, 35, 149, 106, 133, 106],
     '▁digits▁0123456789▁3.14159▁1,000,000▁½▁²▁①▁2000-2010'),
    ([8, 104, 27, 28, 3, 67, 170, 86, 3, 85, 39, 9, 3, 48, 27, 13, 3],
     '▁zero\u200bwidth\u200c\u200dchars\ufeff\u2060here\xad'),
    ([654, 8, 3, 406, 26, 9, 8, 3, 8, 3, 8, 3], '▁control▁\x00\x01\x07\x1b\x7f▁chars▁\x85▁\u2028▁\u2029'),
    ([8, 132, 42, 22, 397, 9, 8, 6, 8, 3, 8, 3, 8, 3, 8, 3, 8, 3], '▁ligatures▁ﬁ▁ﬂ▁ﬀ▁ﬃ▁Æ▁œ'),
    ([265, 180, 8, 3, 8, 3, 8, 3, 8, 24, 182, 27, 31, 9], '▁Roman▁Ⅻ▁ⅻ▁Ⅳ▁numerals'),
    ([8, 3, 8, 24, 45, 9, 32, 3, 9, 32, 158, 13], '▁\u3000\xa0\u2003▁nbsp\xa0space'),
    ([8, 3, 24, 3, 30, 3, 20, 3, 8, 3, 8, 3, 8, 3, 8, 3, 8, 3], '▁Ünïcödé▁ÀÉÎÕÜ▁ß▁ẞ▁ı▁İ'),
    ([37, 168, 10, 119, 10, 54, 40, 172, 540, 79, 15, 8, 3, 133, 10, 143, 45, 24, 59, 280, 149, 3, 106, 163, 3,
      149, 372, 143, 12, 407, 20, 24, 36, 16, 145, 3],
     "▁The▁U.S.▁Senate▁approved▁$1.5bn▁on▁12/03/2005,▁didn't▁it?"),
    ([8, 999, 51, 200, 68, 8, 3, 9, 34, 39, 16, 3, 8, 3, 9, 21, 58, 3, 8, 3, 8, 356, 195, 13, 34, 129, 9, 8, 3, 8,
      3, 8, 20, 22, 150, 8, 3, 8, 223, 29, 32, 9, 114],
     '▁quotes▁“smart”▁‘single’▁«▁guillemets▁»▁—▁dash▁…▁ellipsis'),
    ([178, 86, 8, 3, 8, 3, 8, 3, 8, 3, 8, 3, 8, 3, 8, 3, 135, 8, 3, 8, 3], '▁math▁∑∫√∞≠≤▁±▁×▁÷▁µ▁Å▁Ω▁K▁℃▁㎏'),
    ([8, 3, 60, 32, 83, 109, 128, 23, 897, 8, 3], '▁�▁replacement▁and▁private▁\ue000'),
    ([617, 57, 8, 3, 240, 45, 47, 67, 8, 3, 74, 196, 29, 8, 3, 412, 79, 43, 278, 39, 29, 8, 3],
     '▁Arabic▁مرحبا▁Hebrew▁שלום▁Thai▁สวัสดี▁Devanagari▁नमस्ते'),
    ([8, 3, 187, 325, 119, 3, 8, 3, 119, 298, 379, 3, 8, 3, 379, 144, 346, 3, 8, 3, 573, 266, 737, 3, 8, 3, 248,
      144, 119, 737, 3, 8, 3, 9, 3, 950, 33],
     '▁[CLS]▁[SEP]▁[PAD]▁[UNK]▁[MASK]▁<s>▁literal'),
    ([237, 8, 3, 402, 8, 5, 8, 6, 110], '▁New▁York▁<url>▁ﬁne'),
    ([8, 8, 8, 31, 26, 678, 8, 8, 8, 68, 30, 193, 15, 8, 8], '▁▁▁already▁▁▁escaped▁▁'),
    ([18, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
      22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22],
     '▁aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
    ([168, 24, 53, 24, 320, 295, 8, 3, 8, 3], '▁Unknownish▁☃☃☃▁ꙮꙮ'),
    ([8, 3, 8, 3, 8, 3, 55, 3], '▁ｶﾞｷﾞ▁ﾊﾟ▁Ｅ́▁ÅÅ'),
]


@pytest.fixture(scope="module")
def spm():
    return SentencePieceTokenizer(SPM_MODEL)


@pytest.fixture(scope="module")
def spm_identity():
    return SentencePieceTokenizer(SPM_IDENTITY)


# ----------------------------------------------------------------------------- hand-built protobufs

def varint(n):
    n &= (1 << 64) - 1                                         # negative int32 -> 10-byte two's complement
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def pb_varint(number, n):
    return varint(number << 3 | 0) + varint(n)


def pb_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def pb_float(number, x):
    return varint(number << 3 | 5) + struct.pack("<f", x)


def spm_bytes(pieces, model_type=1, byte_fallback=False, add_dummy_prefix=False, remove_extra_whitespaces=False):
    """A ModelProto: pieces (piece, score, type), a trainer_spec, an identity normalizer_spec."""
    data = b"".join(pb_bytes(1, pb_bytes(1, p.encode()) + pb_float(2, s) + pb_varint(3, t)) for p, s, t in pieces)
    data += pb_bytes(2, pb_varint(3, model_type) + pb_varint(35, byte_fallback) + pb_varint(43, -1))
    data += pb_bytes(3, pb_bytes(1, b"identity") + pb_varint(3, add_dummy_prefix)
                     + pb_varint(4, remove_extra_whitespaces))
    return data


def hand_model(tmp_path, pieces, **kwargs):
    """A model of [PAD] [CLS] [SEP] [UNK] (ids 0-3) + `pieces`, identity normalizer, no dummy prefix."""
    path = tmp_path / "hand.model"
    path.write_bytes(spm_bytes([("[PAD]", 0, CONTROL), ("[CLS]", 0, CONTROL), ("[SEP]", 0, CONTROL),
                                ("[UNK]", 0, UNKNOWN), *pieces], **kwargs))
    return SentencePieceTokenizer(str(path))


def test_protobuf_reader_reads_every_wire_type_it_supports():
    data = (pb_varint(1, 300) + pb_varint(2, -1) + pb_float(3, 1.5) + pb_bytes(4, "▁é".encode())
            + varint(5 << 3 | 1) + struct.pack("<d", 2.0))
    assert read_protobuf(data) == [(1, 300), (2, (1 << 64) - 1), (3, struct.pack("<f", 1.5)),
                                   (4, "▁é".encode()), (5, struct.pack("<d", 2.0))]
    assert varint(300) == b"\xac\x02" and len(varint(-1)) == 10  # the encoder above, by the spec's example


@pytest.mark.parametrize("data", [b"\x08", b"\x08\x80", b"\x12\x05ab", b"\x0b"])
def test_protobuf_reader_refuses_truncated_or_group_fields(data):
    with pytest.raises(ValueError, match="protobuf"):
        read_protobuf(data)


def test_read_spm_model_reads_pieces_specs_and_defaults():
    data = spm_bytes([("[UNK]", 0.0, UNKNOWN), ("▁a", -1.25, NORMAL), ("<u>", 0.0, USER_DEFINED)], byte_fallback=True)
    data += pb_varint(99, 7)                                  # an unknown field is skipped
    pieces, trainer, normalizer = read_spm_model(data)
    assert pieces == [dict(piece="[UNK]", score=0.0, type=UNKNOWN), dict(piece="▁a", score=-1.25, type=NORMAL),
                      dict(piece="<u>", score=0.0, type=USER_DEFINED)]
    assert trainer["model_type"] == 1 and trainer["byte_fallback"] is True and trainer["pad_id"] == -1
    assert trainer["unk_id"] == 0 and trainer["unk_surface"] == " \u2047 "          # defaults of the .proto
    assert normalizer == dict(name="identity", precompiled_charsmap=b"", add_dummy_prefix=False,
                              remove_extra_whitespaces=False, escape_whitespaces=True)


# ----------------------------------------------------------------------------- the fixtures

def test_fixture_loads_with_deberta_v3_special_ids(spm):
    assert len(spm.pieces) == 3000 and spm.normalizer_spec["name"] == "nmt_nfkc"
    assert spm.trainer_spec["byte_fallback"] and len(spm.normalizer_spec["precompiled_charsmap"]) > 100_000
    assert (spm.pad_token_id, spm.cls_token_id, spm.sep_token_id, spm.unk_token_id) == (0, 1, 2, 3)
    assert spm.mask_token_id == 3000 and spm.vocab_size == 3001   # [MASK] added after the pieces
    assert [spm.pieces[i]["type"] for i in range(5)] == [CONTROL, CONTROL, CONTROL, UNKNOWN, BYTE]
    assert spm.pieces[4]["piece"] == "<0x00>" and spm.pieces[259]["piece"] == "<0xFF>"


def test_charsmap_double_array_finds_nmt_nfkc_rules(spm):
    strings = spm.charsmap_strings
    replacement = lambda value: strings[value:strings.index(b"\0", value)].decode()
    for text, expected in [("ﬁ", "fi"), ("Ⅻ", "XII"), ("Ｆ", "F"), ("\u3000", " "), ("½", "1⁄2")]:
        key = text.encode()
        (value, length), = spm.charsmap.common_prefix_search(key + b"tail")
        assert (replacement(value), length) == (expected, len(key))
        assert spm.charsmap.exact_match_search(key) == value
    assert spm.charsmap.common_prefix_search(b"abc") == [] and spm.charsmap.exact_match_search(b"a") == -1


@pytest.mark.parametrize("model, expected", [(SPM_MODEL, EXPECTED_SPM), (SPM_IDENTITY, EXPECTED_SPM_IDENTITY)],
                         ids=["nmt_nfkc+byte_fallback", "identity+user_defined"])
def test_torture_list_equals_the_sentencepiece_library(model, expected, spm, spm_identity):
    tok = spm if model == SPM_MODEL else spm_identity
    for text, (ids, normalized) in zip(TORTURE, expected, strict=True):
        assert tok.normalize(text) == normalized, text
        assert tok.encode_as_ids(text) == ids, text


def test_malformed_utf8_normalizes_each_bad_byte_to_replacement_char(spm_identity):
    assert spm_identity.normalize(b"a\xffb\xe2\x96") == "▁a\ufffdb\ufffd\ufffd"
    assert spm_identity.normalize(b"\xc0\x80\xed\xa0\x80") == "▁" + "\ufffd" * 5  # overlong, surrogate


# ----------------------------------------------------------------------------- unigram Viterbi

def test_viterbi_breaks_ties_for_the_longer_last_piece(tmp_path):
    tok = hand_model(tmp_path, [("a", -1.0, NORMAL), ("b", -1.0, NORMAL), ("ab", -2.0, NORMAL),
                                ("c", -1.5, NORMAL), ("bc", -2.5, NORMAL)])
    assert tok.tokenize_text("ab") == ["ab"]                   # [ab] -2 ties [a, b] -2: ends at 2 first
    assert tok.tokenize_text("abc") == ["a", "bc"]             # [a, bc] -3.5 ties [ab, c]: later start loses


LONG = ("that was cat company people company on this that reported company city of announced as city year by "
        "house United house and government company is been president city house reported a announced of this "
        "city been been company with the in 1990-2000, or 10'000 people.")


LONG_2 = ("with 000 States were this for minister this is the a on it in it minister at cat government to year "
          "announced a that 2000 States were for has been 1000 river to 2000 government 1990-2000 10'000.")

LONG_IDS = [
    287, 281, 347, 373, 512, 368, 512, 289, 424, 287, 762, 512, 639, 265, 652, 309, 639, 459, 292, 1291, 439,
    1291, 270, 466, 512, 277, 332, 510, 639, 1291, 762, 267, 652, 265, 424, 639, 332, 332, 512, 296, 262, 266,
    1362, 275, 397, 381, 596, 263, 405, 604, 276, 381, 596, 368, 261]
LONG_2_IDS = [
    296, 264, 596, 381, 546, 329, 424, 285, 996, 424, 277, 262, 267, 289, 334, 266, 334, 996, 310, 347, 373,
    466, 269, 459, 652, 267, 287, 2132, 546, 329, 285, 302, 332, 1103, 381, 1838, 269, 2132, 466, 1362, 275,
    397, 381, 596, 604, 276, 381, 596, 261]


def test_float32_path_scores_break_ties_as_the_library(spm):
    """'0' '00' against '00' '0' is decided by float32 rounding of the path scores: the library
    (sentencepiece 0.2.3) splits the '000' at the start of LONG_2 as '00' '0' and the '2000' at the
    end of LONG as '2' '0' '00'. Comparing double sums (as unigram_model.cc reads) gets LONG wrong;
    keeping the path scores in double throughout gets LONG_2 wrong."""
    assert spm.encode_as_ids(LONG) == LONG_IDS
    assert spm.encode_as_ids(LONG_2) == LONG_2_IDS


def test_unknown_node_scores_min_score_minus_10(tmp_path):
    """'x' has no piece of its own, so an unknown node covers it: [x][ab] = (-1 - 10) + 8 = -3 loses
    to [xab] = -1 (with a penalty of 5 it would win: -6 + 8 = 2)."""
    tok = hand_model(tmp_path, [("a", -1.0, NORMAL), ("b", -1.0, NORMAL), ("ab", 8.0, NORMAL), ("xab", -1.0, NORMAL)])
    assert tok.tokenize_text("xab") == ["xab"]
    assert tok.encode_pieces("xxab") == [("x", 3), ("xab", 7)]


def test_whitespace_as_suffix_and_all_space_text(tmp_path):
    """treat_whitespace_as_suffix puts the dummy '▁' at the end; text of spaces only stays empty."""
    path = tmp_path / "suffix.model"
    data = spm_bytes([("[PAD]", 0, CONTROL), ("[CLS]", 0, CONTROL), ("[SEP]", 0, CONTROL), ("[UNK]", 0.0, UNKNOWN),
                      ("a", -1.0, NORMAL)], add_dummy_prefix=True, remove_extra_whitespaces=True)
    path.write_bytes(data + pb_bytes(2, pb_varint(40, 3)) + pb_bytes(2, pb_varint(24, 1)))  # trainer_specs merge
    tok = SentencePieceTokenizer(str(path))
    assert tok.trainer_spec["treat_whitespace_as_suffix"] and tok.trainer_spec["unk_id"] == 3
    assert tok.normalize("  a  b ") == "a▁b▁" and tok.normalize("   ") == ""


def test_unknown_characters_merge_into_one_unk_or_become_bytes(tmp_path):
    tok = hand_model(tmp_path, [("a", -1.0, NORMAL)])
    assert tok.encode_pieces("a☃☃a") == [("a", 4), ("☃☃", 3), ("a", 4)]
    assert tok.encode_pieces("ééa") == [("éé", 3), ("a", 4)]
    byte_pieces = [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    tok = hand_model(tmp_path, [*byte_pieces, ("a", -1.0, NORMAL)], byte_fallback=True)
    assert tok.encode_pieces("a☃") == [("a", 260), ("<0xE2>", 4 + 0xE2), ("<0x98>", 4 + 0x98), ("<0x83>", 4 + 0x83)]


def test_user_defined_piece_wins_and_unused_piece_never_matches(tmp_path):
    tok = hand_model(tmp_path, [("z", -0.25, NORMAL), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL), ("ab", -1.5, NORMAL),
                                ("ba", -20.0, USER_DEFINED), ("u", -9.0, UNUSED)])
    assert tok.tokenize_text("aba") == ["a", "ba"]             # 'ba' scores 2 bytes * max_score - 0.1 = -0.6
    assert tok.encode_pieces("u") == [("u", 3)]


def test_user_defined_pieces_skip_the_charsmap(tmp_path):
    """spm.model + user-defined 'ﬁ' and 'Ⅻ' (appended pieces 3000, 3001): they stay as they are
    where nmt_nfkc would make 'fi' and 'XII' of them. Expected ids from the library."""
    def piece(text):
        return pb_bytes(1, pb_bytes(1, text.encode()) + pb_float(2, 0.0) + pb_varint(3, USER_DEFINED))
    path = tmp_path / "spm.model"
    path.write_bytes(pathlib.Path(SPM_MODEL).read_bytes() + piece("ﬁ") + piece("Ⅻ"))
    tok = SentencePieceTokenizer(str(path))
    assert tok.normalize("ﬁne Ⅻ fine XII") == "▁ﬁne▁Ⅻ▁fine▁XII"
    assert tok.encode_as_ids("ﬁne Ⅻ fine XII") == [264, 3000, 522, 264, 3001, 390, 448, 264, 92, 452, 452]
    assert tok.mask_token_id == 3002


@settings(max_examples=150, deadline=None)
@given(st.text("ab c", max_size=10), st.lists(st.sampled_from([-0.5, -1.0, -1.5, -2.0, -3.0]), min_size=7, max_size=7))
def test_viterbi_score_is_the_best_of_all_segmentations(tmp_path_factory, text, scores):
    """Scores are multiples of 1/2, so float32 sums are exact and a brute force can compare."""
    candidates = ["a", "b", "c", "ab", "ba", "abc", "▁a"]
    tok = hand_model(tmp_path_factory.mktemp("v"), [(p, s, NORMAL) for p, s in zip(candidates, scores)])
    normalized = tok.normalize(text)
    score_of = dict(zip(candidates, scores))
    unk = min(scores) - 10.0

    def best(s):                                               # every segmentation; unknown chars one by one
        if not s:
            return 0.0
        options = [score_of[s[:k]] + best(s[k:]) for k in range(1, len(s) + 1) if s[:k] in score_of]
        if s[0] not in score_of:
            options.append(unk + best(s[1:]))
        return max(options)

    path = tok.viterbi(normalized)
    assert "".join(p for p, _ in path) == normalized
    assert sum(score_of.get(p, unk) for p, _ in path) == best(normalized)


# ----------------------------------------------------------------------------- round trip, ids

ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581")


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET, max_size=24))
def test_byte_fallback_decodes_back_to_the_normalized_text(spm, text):
    ids = spm.encode_as_ids(text)
    assert all(0 <= i < len(spm.pieces) and spm.pieces[i]["type"] not in (CONTROL, UNKNOWN) for i in ids)
    assert spm.decode(ids) == spm.normalize(text)[1:].replace("▁", " ")


@settings(max_examples=100, deadline=None)
@given(st.text(ALPHABET, max_size=24))
def test_identity_model_pieces_cover_the_normalized_text(spm_identity, text):
    ids = spm_identity.encode_as_ids(text)
    assert all(spm_identity.pieces[i]["type"] in (NORMAL, USER_DEFINED, UNKNOWN) for i in ids)
    assert "".join(spm_identity.tokenize_text(text)) == spm_identity.normalize(text)


# ----------------------------------------------------------------------------- DeBERTa layout

def test_pair_encoding_is_cls_a_sep_b_sep(spm):
    a, b = spm.encode_as_ids("Hello world."), spm.encode_as_ids("A second one")
    ids, types = spm.encode("Hello world.", "A second one")
    assert ids == [1, *a, 2, *b, 2]
    assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert spm.encode("Hello world.") == ([1, *a, 2], [0] * (len(a) + 2))
    assert spm.encode("Hello world.", "") == spm.encode("Hello world.")


def test_special_tokens_in_text_become_their_ids(spm):
    ids, _ = spm.encode("a [MASK] b")
    assert ids == [1, *spm.encode_as_ids("a"), 3000, *spm.encode_as_ids("b"), 2]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["the", "Senate", "1990-2000", "ﬁne", "東京", "!"]), max_size=30),
       st.lists(st.sampled_from(["a", "dog", "Ⅻ", "runs."]), min_size=1, max_size=30), st.integers(3, 40))
def test_pair_truncation_is_longest_first(spm, words_a, words_b, max_length):
    text_a, text_b = " ".join(words_a), " ".join(words_b)
    a, b = spm.encode_as_ids(text_a), spm.encode_as_ids(text_b)
    keep_a, keep_b = longest_first(len(a), len(b), max_length - 3)
    assert spm.encode(text_a, text_b, max_length=max_length)[0] == [1, *a[:keep_a], 2, *b[:keep_b], 2]


def test_max_length_too_small_for_the_special_tokens_is_refused(spm):
    with pytest.raises(ValueError, match="max_length=2 cannot hold the 3 special tokens"):
        spm.encode("a", "b", max_length=2)


# ----------------------------------------------------------------------------- loading

def deberta_folder(folder, model=SPM_MODEL, tokenizer_config=None, extra_files=()):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "spm.model")
    (folder / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for name in extra_files:
        (folder / name).write_text("[PAD]\n")
    return folder


def test_load_tokenizer_picks_sentencepiece_for_a_deberta_folder(tmp_path):
    config = {"do_lower_case": False, "mask_token": "[MASK]", "added_tokens_decoder": {
        "0": {"content": "[PAD]"}, "3": {"content": "[UNK]"}, "5000": {"content": "[MASK]", "special": True}}}
    tok = load_tokenizer(deberta_folder(tmp_path / "d", tokenizer_config=config, extra_files=["vocab.txt"]))
    assert isinstance(tok, SentencePieceTokenizer) and tok.mask_token_id == 5000
    assert tok.encode("x [MASK]")[0] == [1, *tok.encode_as_ids("x"), 5000, 2]
    assert isinstance(load_tokenizer(deberta_folder(tmp_path / "bare")), SentencePieceTokenizer)


def test_load_tokenizer_lowercases_when_configured(tmp_path):
    tok = load_tokenizer(deberta_folder(tmp_path / "d", tokenizer_config={"do_lower_case": True}))
    assert tok.encode_as_ids("HELLO World") == tok.encode_as_ids("hello world")


@pytest.mark.parametrize("config, message", [
    ({"split_by_punct": True}, "split_by_punct"),
    ({"added_tokens_decoder": {"7": {"content": "[MASK]"}}}, "cannot take id 7"),
    ({"added_tokens_decoder": {"9": {"content": "[SEP]"}}}, "is given id 9, but it is piece 2"),
])
def test_load_tokenizer_refuses_bad_tokenizer_configs(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        load_tokenizer(deberta_folder(tmp_path / "d", tokenizer_config=config))


def test_not_a_unigram_model_is_refused_with_its_name(tmp_path):
    bpe = tmp_path / "bpe.model"
    bpe.write_bytes(spm_bytes([("[UNK]", 0.0, UNKNOWN), ("a", -1.0, NORMAL)], model_type=2))
    with pytest.raises(ValueError, match=r"BPE sentencepiece model \(model_type=2\); only UNIGRAM"):
        SentencePieceTokenizer(str(bpe))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x0b\x00")
    with pytest.raises(ValueError, match="junk.model is not a sentencepiece model"):
        SentencePieceTokenizer(str(junk))
