"""torchrun's own layer of the output: launcher lines, NCCL lines, the failure box."""
