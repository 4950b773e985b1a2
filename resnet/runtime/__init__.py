"""The running rank: its place in the job (World, is_chief, rank-0 decisions), its threads, and
where it runs (placement)."""
