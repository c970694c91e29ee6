"""Stage 2: feature store + annotations -> training samples.

``samples`` is the one sample type and its padded batch layout; ``pairs`` turns annotations into query-target and
sentence-moment specs; ``pretrain_clips`` draws the self-supervised random-clip specs with their augmentations;
``specs`` materialises any spec into a sample and batches them without Ray; ``demo`` renders the synthetic archive.
"""
