"""
encoder: the pretrained encoder a run fine-tunes, in plain torch: BERT / RoBERTa / DeBERTa-v2/v3 classifiers that
load Hugging Face checkpoints (model.py), their tokenizers (tokenization.py), and the safetensors reader, the atomic
writes and the hub download they need (hub.py).
"""
