"""Data preparation: read refer-layout datasets, generate the synthetic one, and write WebDataset shards."""
