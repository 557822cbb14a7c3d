"""Offline data preparation: read refer-layout datasets, generate the synthetic one, write WebDataset shards."""
