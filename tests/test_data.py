"""
Tests for data/: GLUE TSV layouts, loader errors, downloads from a loopback server, the MRPC
split, metrics, and the shipped RTE sample. Every file is made here, in tmp_path.
"""

import functools
import http.server
import math
import threading
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from data import (
    RTE_SAMPLE_DIR,
    TASKS,
    Example,
    accuracy,
    build_mrpc,
    compute_metrics,
    download_glue,
    f1,
    load_glue,
    main_metric,
    matthews_corrcoef,
    pearson,
    read_glue_tsv,
    spearman,
)
from data.metrics import rankdata

# -----------------------------------------------------------------------------
# one small file per task, in the exact layout of the real GLUE TSVs (own sentences)

Q = 'He said "no" and left'  # GLUE files hold bare quote characters: no csv quoting

LAYOUTS = {
    # task: (file text, expected examples)
    "cola": (
        "gj04\t1\t\tThe cat chased the mouse.\n"
        f"cj99\t0\t*\t{Q}.\n"
        "ks08\t0\t*\tMouse the chased cat the.\n",
        [Example("The cat chased the mouse.", None, 1), Example(f"{Q}.", None, 0),
         Example("Mouse the chased cat the.", None, 0)]),
    "sst2": (
        "sentence\tlabel\n"
        f"a {Q} kind of film \t0\n"
        "warm , funny and wise \t1\n",
        [Example(f"a {Q} kind of film ", None, 0), Example("warm , funny and wise ", None, 1)]),
    "mrpc": (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        f"1\t1001\t1002\t{Q} on Monday.\tOn Monday {Q}.\n"
        "0\t2001\t2002\tShares rose 5 percent.\tShares fell sharply.\n",
        [Example(f"{Q} on Monday.", f"On Monday {Q}.", 1),
         Example("Shares rose 5 percent.", "Shares fell sharply.", 0)]),
    "qqp": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        f"7\t13\t14\tWhy is the sky blue?\tWhat makes the sky \"blue\"?\t1\n"
        "8\t15\t16\tHow do I learn piano?\tWhere is Paris?\t0\n",
        [Example("Why is the sky blue?", 'What makes the sky "blue"?', 1),
         Example("How do I learn piano?", "Where is Paris?", 0)]),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        f"0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA dog runs.\t{Q}.\t0.500\n"
        "1\tmain-news\theadlines\t2013\t0002\tnone\tnone\tA man sings.\tA man is singing.\t4.750\n",
        [Example("A dog runs.", f"{Q}.", 0.5), Example("A man sings.", "A man is singing.", 4.75)]),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
        f"0\t31\t31e\tfiction\t( ( A b ) )\t( c )\t(ROOT (S))\t(ROOT (S))\t{Q}.\tHe left.\tentailment\tentailment\n"
        "1\t32\t32n\tslate\t( a )\t( b )\t(ROOT)\t(ROOT)\tIt rained.\tIt was sunny.\tcontradiction\tcontradiction\n"
        "2\t33\t33c\ttravel\t( a )\t( b )\t(ROOT)\t(ROOT)\tShe ran.\tShe was late.\tneutral\tneutral\n",
        [Example(f"{Q}.", "He left.", 1), Example("It rained.", "It was sunny.", 0),
         Example("She ran.", "She was late.", 2)]),
    "qnli": (
        "index\tquestion\tsentence\tlabel\n"
        f"0\tWho left?\t{Q}.\tnot_entailment\n"
        "1\tWhere is the bank?\tThe bank is on Main Street.\tentailment\n",
        [Example("Who left?", f"{Q}.", 1),
         Example("Where is the bank?", "The bank is on Main Street.", 0)]),
    "rte": (
        "index\tsentence1\tsentence2\tlabel\n"
        f"0\t{Q}.\tHe stayed.\tnot_entailment\n"
        "1\tAnna bought a car.\tAnna owns a car.\tentailment\n",
        [Example(f"{Q}.", "He stayed.", 1), Example("Anna bought a car.", "Anna owns a car.", 0)]),
}
LAYOUTS["mnli-mm"] = LAYOUTS["mnli"]

# MNLI dev files carry five annotator labels (label1..label5) before gold_label.
MNLI_DEV = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label\n"
    "0\t1\t1n\tgovernment\t( a )\t( b )\t(ROOT)\t(ROOT)\t{s1}\t{s2}\tneutral\tneutral\t"
    "entailment\tneutral\tneutral\tneutral\n")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")  # newline="": bytes exactly as given
    return path


def test_layouts_cover_every_task():
    assert set(LAYOUTS) == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("split", ["train", "dev"])
def test_every_task_parses_its_real_layout(tmp_path, task, split):
    text, expected = LAYOUTS[task]
    if task.startswith("mnli") and split == "dev":  # dev rows have label1..label5
        text = MNLI_DEV.format(s1=f"{Q}.", s2="He left.")
        expected = [Example(f"{Q}.", "He left.", 2)]
    write(tmp_path / TASKS[task].splits[split], text)
    got = load_glue(task, split, tmp_path, download=False)
    assert got == expected
    assert all(isinstance(e.label, float if task == "stsb" else int) for e in got)


def test_mnli_reads_matched_and_mismatched_dev_files(tmp_path):
    write(tmp_path / "dev_matched.tsv", MNLI_DEV.format(s1="Matched premise.", s2="m"))
    write(tmp_path / "dev_mismatched.tsv", MNLI_DEV.format(s1="Mismatched premise.", s2="mm"))
    assert load_glue("mnli", "dev", tmp_path, download=False)[0].text_a == "Matched premise."
    for task, split in (("mnli", "dev_mismatched"), ("mnli-mm", "dev")):
        assert load_glue(task, split, tmp_path, download=False)[0].text_a == "Mismatched premise."


def test_cola_has_no_header_row(tmp_path):
    # A first row that looks like data must be read as data, not swallowed as a header.
    text, expected = LAYOUTS["cola"]
    write(tmp_path / "dev.tsv", text)
    assert load_glue("cola", "dev", tmp_path, download=False)[0] == expected[0]


def test_columns_are_found_by_header_name_not_position(tmp_path):
    write(tmp_path / "dev.tsv", "label\tsentence2\tindex\tsentence1\nentailment\tB\t0\tA\n")
    assert load_glue("rte", "dev", tmp_path, download=False) == [Example("A", "B", 0)]


text_field = st.text(st.characters(blacklist_characters="\t\n", blacklist_categories=("Cs",)),
                     max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(text_field, text_field, st.sampled_from(["entailment", "not_entailment"])),
                     min_size=1, max_size=5))
def test_any_text_without_tab_or_newline_round_trips(tmp_path_factory, rows):
    # Quotes, '\r', U+2028 and the like inside a sentence are kept exactly.
    body = "".join(f"{i}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(rows))
    path = write(tmp_path_factory.mktemp("rt") / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n" + body)
    labels = TASKS["rte"].labels
    assert read_glue_tsv(path, "rte") == [Example(a, b, labels.index(y)) for a, b, y in rows]


def test_only_the_line_ending_is_stripped(tmp_path):
    # CRLF endings go; a '\r', U+2028 or U+0085 inside a sentence, or its trailing space, stay.
    odd = "A\rB\u2028C\x85D "
    write(tmp_path / "dev.tsv", f"index\tsentence1\tsentence2\tlabel\r\n0\t{odd}\tB \tentailment\r\n")
    assert load_glue("rte", "dev", tmp_path, download=False) == [Example(odd, "B ", 0)]
    write(tmp_path / "train.tsv", f"gj04\t1\t\t{odd}\n")  # CoLA: the sentence ends the line
    assert load_glue("cola", "train", tmp_path, download=False) == [Example(odd, None, 1)]


def test_malformed_row_names_file_line_and_expected_columns(tmp_path):
    path = write(tmp_path / "dev.tsv",
                 "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tentailment\n1\tA B\tentailment\n")
    with pytest.raises(ValueError, match=r"dev\.tsv, line 3: expected 4 .* found 3") as e:
        load_glue("rte", "dev", tmp_path, download=False)
    assert str(path) in str(e.value)


def test_unknown_label_names_file_line_and_allowed_labels(tmp_path):
    path = write(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tcontradiction\n")
    with pytest.raises(ValueError, match=r"line 2: label 'contradiction' .*'entailment', 'not_entailment'") as e:
        load_glue("rte", "train", tmp_path, download=False)
    assert str(path) in str(e.value)


def test_stsb_score_must_be_a_number(tmp_path):
    write(tmp_path / "dev.tsv", LAYOUTS["stsb"][0].replace("4.750", "high"))
    with pytest.raises(ValueError, match=r"line 3: stsb score 'high'"):
        load_glue("stsb", "dev", tmp_path, download=False)


def test_missing_header_column_is_reported(tmp_path):
    write(tmp_path / "dev.tsv", "index\ttext\tlabel\n0\tA\tentailment\n")
    with pytest.raises(ValueError, match=r"no column 'sentence1'"):
        load_glue("rte", "dev", tmp_path, download=False)


def test_qqp_train_skips_broken_rows_with_one_counting_warning(tmp_path):
    text, expected = LAYOUTS["qqp"]
    broken = "9\t17\t18\tA question cut by a newline\n\tand its tail?\t0\n"
    write(tmp_path / "train.tsv", text + broken)
    with pytest.warns(UserWarning, match=r"skipped 2 rows") as record:
        assert load_glue("qqp", "train", tmp_path, download=False) == expected
    assert len(record) == 1
    write(tmp_path / "dev.tsv", text + broken)  # elsewhere a broken row is an error
    with pytest.raises(ValueError, match=r"line 4: expected 6"):
        load_glue("qqp", "dev", tmp_path, download=False)


def test_unknown_task_or_split_lists_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"task='wnli'.*'cola'.*'rte'"):
        load_glue("wnli", "train", tmp_path)
    with pytest.raises(ValueError, match=r"split='test'.*\['train', 'dev'\]"):
        load_glue("rte", "test", tmp_path)
    with pytest.raises(ValueError, match=r"'dev_mismatched'"):
        load_glue("mnli", "validation", tmp_path)


def test_missing_files_without_download_say_which_files_go_where(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_glue("rte", "dev", tmp_path / "RTE", download=False)
    msg = str(e.value)
    assert "train.tsv" in msg and "dev.tsv" in msg and str(tmp_path / "RTE") in msg and "RTE.zip" in msg


def test_task_table_is_consistent():
    for name, t in TASKS.items():
        assert t.name == name
        assert t.main_metric in t.metrics
        assert t.num_labels == (1 if t.labels is None else len(set(t.labels)))
        assert {"train", "dev"} <= set(t.splits)


# -----------------------------------------------------------------------------
# downloads from a loopback server

@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, base URL) of an HTTP server on 127.0.0.1; GLUE_URL unset."""
    monkeypatch.delenv("GLUE_URL", raising=False)
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/glue"
    httpd.shutdown()
    httpd.server_close()


def make_zip(path, members):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)


def test_download_glue_fetches_and_extracts_the_task_zip(server, tmp_path):
    root, base = server
    text, expected = LAYOUTS["rte"]
    make_zip(root / "glue" / "RTE.zip", {"RTE/train.tsv": text, "RTE/dev.tsv": text,
                                         "RTE/test.tsv": "index\tsentence1\tsentence2\n"})
    data_dir = tmp_path / "cache" / "RTE"
    assert download_glue("rte", data_dir, url=base) == data_dir
    assert sorted(p.name for p in data_dir.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert load_glue("rte", "dev", data_dir, download=False) == expected


def test_load_glue_downloads_missing_files_from_glue_url(server, tmp_path, monkeypatch):
    root, base = server
    text, expected = LAYOUTS["qqp"]
    make_zip(root / "glue" / "QQP-clean.zip", {"QQP/train.tsv": text, "QQP/dev.tsv": text})
    monkeypatch.setenv("GLUE_URL", base + "/")
    assert load_glue("qqp", "train", tmp_path / "QQP") == expected


def test_zip_without_the_task_folder_is_an_error(server, tmp_path):
    root, base = server
    make_zip(root / "glue" / "RTE.zip", {"rte/train.tsv": "x", "rte/dev.tsv": "x"})
    with pytest.raises(ValueError, match=r"folder RTE/.*\['rte'\]"):
        download_glue("rte", tmp_path / "RTE", url=base)


def test_unreachable_server_explains_the_offline_setup(server, tmp_path):
    _, base = server  # serves nothing: 404
    with pytest.raises(OSError) as e:
        download_glue("cola", tmp_path / "CoLA", url=base)
    msg = str(e.value)
    assert f"{base}/CoLA.zip" in msg and str(tmp_path / "CoLA") in msg and "train.tsv" in msg


def test_a_failed_download_leaves_no_empty_folder_behind(server, tmp_path):
    _, base = server  # serves nothing: 404
    with pytest.raises(OSError):
        download_glue("cola", tmp_path / "cache" / "glue" / "CoLA", url=base)
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]  # neither CoLA/ nor the folders above it
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(OSError):
        download_glue("cola", tmp_path / "kept", url=base)
    assert (tmp_path / "kept").is_dir()


def test_the_download_cache_is_glue_dir_when_set(server, tmp_path, monkeypatch):
    root, base = server
    text, expected = LAYOUTS["rte"]
    make_zip(root / "glue" / "RTE.zip", {"RTE/train.tsv": text, "RTE/dev.tsv": text})
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "cache"))
    assert load_glue("rte", "dev", url=base) == expected
    assert sorted(p.name for p in (tmp_path / "cache" / "RTE").iterdir()) == ["dev.tsv", "train.tsv"]
    (tmp_path / "cache" / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(ValueError, match="holds no rte examples.*delete it to download it again"):
        load_glue("rte", "dev")  # from the cache: it may be deleted to fetch it again
    with pytest.raises(ValueError, match="holds no rte examples: is it truncated\\?$"):
        load_glue("rte", "dev", tmp_path / "cache" / "RTE")  # a folder of the user's: never "delete it"


@pytest.mark.parametrize("line", [1, 2, 3])
def test_a_tsv_that_is_not_utf8_names_the_file_and_line(tmp_path, line):
    text, _ = LAYOUTS["rte"]
    rows = text.encode().split(b"\n")
    rows[line - 1] = rows[line - 1][:3] + b"\xff" + rows[line - 1][3:]
    (tmp_path / "dev.tsv").write_bytes(b"\n".join(rows))
    with pytest.raises(ValueError, match=f"dev.tsv, line {line}: not UTF-8 text \\(byte 0xff at column 4\\)"):
        load_glue("rte", "dev", tmp_path, download=False)


MSR_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
MSR_TRAIN = MSR_HEADER + (
    "1\t11\t12\tThe board met on Friday.\tOn Friday the board met.\r\n"
    f"0\t21\t22\t{Q}.\tHe stayed home.\r\n"
    "1\t31\t32\tPrices rose.\tPrices went up.\r\n"
    "0\t41\t42\tIt snowed.\tIt was hot.\r\n")
MSR_TEST = MSR_HEADER + "1\t51\t52\tA test row.\tA test line.\r\n0\t61\t62\tOne.\tTwo.\r\n"
MRPC_DEV_IDS = "21\t22\r\n41\t42\r\n"


def test_mrpc_is_split_by_dev_ids_as_glue_does(server, tmp_path):
    root, base = server
    write(root / "glue" / "msr_paraphrase_train.txt", MSR_TRAIN)
    write(root / "glue" / "msr_paraphrase_test.txt", MSR_TEST)
    write(root / "glue" / "mrpc_dev_ids.tsv", MRPC_DEV_IDS)
    data_dir = tmp_path / "MRPC"
    download_glue("mrpc", data_dir, url=base)
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    assert (data_dir / "dev.tsv").read_text(encoding="utf-8") == header + (
        f"0\t21\t22\t{Q}.\tHe stayed home.\n0\t41\t42\tIt snowed.\tIt was hot.\n")
    assert (data_dir / "train.tsv").read_text(encoding="utf-8") == header + (
        "1\t11\t12\tThe board met on Friday.\tOn Friday the board met.\n"
        "1\t31\t32\tPrices rose.\tPrices went up.\n")
    assert (data_dir / "test.tsv").read_text(encoding="utf-8") == (
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t51\t52\tA test row.\tA test line.\n"
        "1\t61\t62\tOne.\tTwo.\n")
    assert load_glue("mrpc", "dev", data_dir, download=False) == [
        Example(f"{Q}.", "He stayed home.", 0), Example("It snowed.", "It was hot.", 0)]


def test_mrpc_builds_offline_from_local_microsoft_files(tmp_path):
    write(tmp_path / "msr_paraphrase_train.txt", MSR_TRAIN)
    write(tmp_path / "msr_paraphrase_test.txt", MSR_TEST)
    write(tmp_path / "mrpc_dev_ids.tsv", MRPC_DEV_IDS)
    train = load_glue("mrpc", "train", tmp_path, url="http://127.0.0.1:9/never-contacted")
    assert [e.label for e in train] == [1, 1]


def test_mrpc_malformed_microsoft_row_is_reported(tmp_path):
    write(tmp_path / "msr_paraphrase_train.txt", MSR_HEADER + "1\t11\t12\tno second sentence\n")
    write(tmp_path / "msr_paraphrase_test.txt", MSR_TEST)
    write(tmp_path / "mrpc_dev_ids.tsv", MRPC_DEV_IDS)
    with pytest.raises(ValueError, match=r"msr_paraphrase_train\.txt, line 2: expected 5"):
        build_mrpc(tmp_path)


# -----------------------------------------------------------------------------
# metrics: hand-computed values

def test_metrics_match_hand_computed_values():
    preds, labels = [1, 1, 0, 1, 0], [1, 0, 0, 1, 1]  # tp=2 fp=1 fn=1 tn=1
    assert accuracy(preds, labels) == pytest.approx(3 / 5)
    assert f1(preds, labels) == pytest.approx(2 / 3)
    assert matthews_corrcoef(preds, labels) == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert list(rankdata([10, 20, 20, 5])) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))


def test_undefined_metrics_follow_sklearn_and_scipy():
    assert f1([0, 0, 0], [0, 1, 1]) == 0.0  # no true positive
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # constant prediction
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match=r"preds has 2 entries but labels has 3"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"empty"):
        f1([], [])


def test_compute_metrics_reports_each_tasks_metrics():
    preds, labels = [1, 1, 0, 1, 0], [1, 0, 0, 1, 1]
    assert compute_metrics("rte", preds, labels) == {"accuracy": accuracy(preds, labels)}
    assert compute_metrics("cola", preds, labels) == {"mcc": matthews_corrcoef(preds, labels)}
    m = compute_metrics("mrpc", preds, labels)
    assert set(m) == {"f1", "accuracy", "combined"}
    assert m["combined"] == pytest.approx((m["f1"] + m["accuracy"]) / 2)
    s = compute_metrics("stsb", [0.1, 2.0, 3.5, 4.0], [0.0, 2.5, 3.0, 5.0])
    assert set(s) == {"pearson", "spearman", "combined"} and s["spearman"] == pytest.approx(1.0)
    for task in TASKS:
        assert main_metric(task) in compute_metrics(task, [0.0, 1.0, 1.0], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"task='squad'"):
        compute_metrics("squad", preds, labels)


# -----------------------------------------------------------------------------
# metrics: properties

binary = st.lists(st.integers(0, 1), min_size=1, max_size=40)
classes = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40)
reals = st.lists(st.integers(-1000, 1000), min_size=2, max_size=30)


@settings(max_examples=100, deadline=None)
@given(classes)
def test_accuracy_is_the_fraction_correct_in_0_1(pairs):
    p, y = zip(*pairs)
    a = accuracy(p, y)
    assert 0.0 <= a <= 1.0 and a == pytest.approx(sum(pi == yi for pi, yi in pairs) / len(pairs))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40))
def test_f1_is_harmonic_mean_of_precision_and_recall(pairs):
    tp = sum(p == 1 and y == 1 for p, y in pairs)
    fp = sum(p == 1 and y == 0 for p, y in pairs)
    fn = sum(p == 0 and y == 1 for p, y in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    expected = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    p, y = zip(*pairs)
    assert f1(p, y) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(classes)
def test_mcc_is_symmetric_and_in_minus1_1(pairs):
    p, y = zip(*pairs)
    m = matthews_corrcoef(p, y)
    assert m == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)
    assert -1.0 - 1e-12 <= m <= 1.0 + 1e-12


@settings(max_examples=100, deadline=None)
@given(binary)
def test_mcc_is_1_for_perfect_and_minus1_for_inverted(y):
    assume(0 < sum(y) < len(y))  # both classes present, else MCC is undefined (0)
    y = np.array(y)
    assert matthews_corrcoef(y, y) == pytest.approx(1.0)
    assert matthews_corrcoef(1 - y, y) == pytest.approx(-1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40))
def test_mcc_matches_the_binary_confusion_formula(pairs):
    tp = sum(p == 1 and y == 1 for p, y in pairs)
    tn = sum(p == 0 and y == 0 for p, y in pairs)
    fp = sum(p == 1 and y == 0 for p, y in pairs)
    fn = sum(p == 0 and y == 1 for p, y in pairs)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    p, y = zip(*pairs)
    assert matthews_corrcoef(p, y) == pytest.approx((tp * tn - fp * fn) / den if den else 0.0, abs=1e-12)


def naive_average_ranks(x):
    """rank_i = 1 + #{x_j < x_i} + (#{x_j == x_i} - 1) / 2, straight from the definition."""
    return [1 + sum(v < xi for v in x) + (sum(v == xi for v in x) - 1) / 2 for xi in x]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=2, max_size=30))
def test_spearman_is_pearson_of_average_ranks(pairs):
    x, y = zip(*pairs)
    assume(len(set(x)) > 1 and len(set(y)) > 1)
    assert list(rankdata(x)) == naive_average_ranks(x)
    assert spearman(x, y) == pytest.approx(pearson(naive_average_ranks(x), naive_average_ranks(y)), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(reals, reals, st.floats(0.01, 100), st.floats(-1e3, 1e3))
def test_pearson_is_invariant_to_positive_affine_maps(x, y, a, b):
    n = min(len(x), len(y))
    x, y = np.array(x[:n], dtype=np.float64), np.array(y[:n], dtype=np.float64)
    assume(np.ptp(x) > 0 and np.ptp(y) > 0)
    r = pearson(x, y)
    assert -1.0 <= r <= 1.0
    assert pearson(a * x + b, y) == pytest.approx(r, abs=1e-9)
    assert pearson(-a * x + b, y) == pytest.approx(-r, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(reals, reals)
def test_spearman_is_invariant_to_increasing_maps(x, y):
    n = min(len(x), len(y))
    x, y = np.array(x[:n], dtype=np.float64), np.array(y[:n], dtype=np.float64)
    assume(np.ptp(x) > 0 and np.ptp(y) > 0)
    assert spearman(x ** 3 + 7, y) == pytest.approx(spearman(x, y), abs=1e-12)


# -----------------------------------------------------------------------------
# the shipped sample

def test_shipped_rte_sample_loads_with_both_labels_and_no_train_dev_overlap():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = load_glue("rte", "train", RTE_SAMPLE_DIR, download=False)
        dev = load_glue("rte", "dev", RTE_SAMPLE_DIR, download=False)
    assert len(train) >= 32 and len(dev) >= 16
    for split in (train, dev):
        assert {e.label for e in split} == {0, 1}
    train_pairs = {(e.text_a, e.text_b) for e in train}
    assert len(train_pairs) == len(train)
    assert not train_pairs & {(e.text_a, e.text_b) for e in dev}
