"""
run: the machinery of one train.py run, below the story train.py tells. config.py decides the configuration (the
papers' rows in paper_rows.py, then the flags), folder.py keeps the run's folder (lock, checkpoints, results),
step.py makes the step fast (CUDA graphs per length bucket, compile), distributed.py shares batches over processes,
errors.py is the one-line bad input every module reports.
"""
