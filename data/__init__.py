"""
GLUE data for spectral-ft: task layouts, loaders, downloads (data/glue_tasks.py) and
metrics (data/metrics.py). `data/glue/` is the download cache (`$GLUE_DIR` if set);
`data/rte_sample/` a small hand-written RTE-format sample for an offline first run:

    from data import load_glue, RTE_SAMPLE_DIR, compute_metrics
    train = load_glue("rte", "train", RTE_SAMPLE_DIR, download=False)
"""

from data.batches import pad_batch, tokenize
from data.glue_tasks import (
    RTE_SAMPLE_DIR,
    TASKS,
    DataDownloadError,
    Example,
    Task,
    build_mrpc,
    default_root,
    download_glue,
    get_task,
    load_glue,
    load_task,
    read_glue_tsv,
)
from data.metrics import (
    accuracy,
    compute_metrics,
    f1,
    main_metric,
    matthews_corrcoef,
    pearson,
    spearman,
)
