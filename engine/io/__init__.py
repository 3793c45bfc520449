"""Dataset formats in and out: SA-1B, COCO, and safe archive reading."""
