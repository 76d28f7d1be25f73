#!/bin/bash
# `lary extract` on several machines with SLURM: one task per node, each an `accelerate launch` of its GPUs, all
# writing into one shared output folder (see docs/extract.md, "Beyond one machine").
#
#   sbatch --nodes 4 scripts/slurm_extract.sh --model AGI-Eval/LAPA-DINOv3 --dataset lary/ --dataset-config human_1st \
#       --split train --dtype bfloat16 --out /shared/features/human_1st-train
#
# Resubmit the same command to resume a job that was cut short: finished shards are kept.
#SBATCH --job-name=lary-extract
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --output=lary-extract-%j.log
set -euo pipefail

export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PORT=${MAIN_PORT:-29500}

srun --kill-on-bad-exit=1 bash -c '
  accelerate launch --multi_gpu --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID" \
    --num_processes $((GPUS_PER_NODE * SLURM_NNODES)) --main_process_ip "$MAIN_HOST" --main_process_port "$MAIN_PORT" \
    -m lary extract "$@"' _ "$@"
