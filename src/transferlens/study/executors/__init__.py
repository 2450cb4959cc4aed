"""Where runs execute: local worker processes, SLURM jobs (submitit), torchrun groups."""
