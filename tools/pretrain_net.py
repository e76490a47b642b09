#!/usr/bin/env python
"""Self-supervised pretraining (SoCo, BYOL, CoKe, CLSA, SMoG): one process, spawned processes, torchrun or srun.

One CPU (the demo configs set MODEL.DEVICE cpu):
    python tools/pretrain_net.py --config-file configs/BYOL/byol_R18_cpu_demo.yaml
One machine, 8 GPUs:
    python tools/pretrain_net.py --config-file configs/BYOL/byol_R50_300ep.yaml --num-gpus 8
Several jobs on one machine: each picks a free port for its processes' rendezvous (the default
--dist-url auto), so they never collide.
Two machines of 8 GPUs, one line per machine (same config, same --dist-url = machine 0's
address and a port free there; "auto" works on one machine only):
    python tools/pretrain_net.py --config-file CFG --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://10.0.0.1:29500
    python tools/pretrain_net.py --config-file CFG --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://10.0.0.1:29500
torchrun or Slurm's srun starting one process per GPU (or CPU slot): the tool reads their
env:// variables (RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; SLURM_PROCID/
SLURM_LOCALID/SLURM_STEP_NUM_TASKS/SLURM_STEP_NODELIST, rendezvous on the first node at
MASTER_PORT or a port derived from the job id) and spawns nothing; leave --num-gpus at 1:
    torchrun --nproc_per_node 8 --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 \\
        tools/pretrain_net.py --config-file CFG --resume
    srun --ntasks-per-node 8 --gres gpu:8 python tools/pretrain_net.py --config-file CFG --resume
  (tools/slurm/ holds sbatch files to copy. With --resume, torchrun's --max-restarts and a
  requeued or resubmitted job continue from the last checkpoint by themselves; on several
  machines export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for --max-restarts, see docs/CLUSTERS.md.)
Signals: SIGINT, SIGTERM or SIGUSR1 (Slurm's pre-emption notice), sent to the launcher, to every
process or to one rank, make every process save one checkpoint at the same iteration; the job
exits 130 / 143 / 138. PRETRAIN.DIST_TIMEOUT_MINUTES bounds how long the others wait for a
stalled rank (a watchdog names it in the log first).
Resume (continues from OUTPUT_DIR/last_checkpoint with the same data order, lr, EMA and
method state; losses on CPU match an uninterrupted run exactly): add --resume.
Several CPU processes (gloo; the same launcher path, trainer, sampler and checkpointer as on
GPUs; Detectron2's own launch needs CUDA): --num-gpus N with MODEL.DEVICE cpu, e.g.
    python tools/pretrain_net.py --config-file configs/BYOL/byol_R18_cpu_demo.yaml --num-gpus 2
  (--num-gpus is then the number of processes per machine; the threads of the machine are
  shared among them unless OMP_NUM_THREADS is set.)
OUTPUT_DIR must be one folder shared by all machines (checkpoints, --resume): every process
reads last_checkpoint, and the job stops with an error if they do not find the same file.
Short runs: SOLVER.MAX_ITER N on the command line overrides the epochs; every schedule follows.
With few GPUs, keep the paper's batch with PRETRAIN.ACCUM_STEPS (gradient accumulation).
The console prints, every PRETRAIN.LOG_PERIOD iterations, ETA, iteration, losses, time per
iteration, data time, lr and memory; OUTPUT_DIR gets metrics.json, TensorBoard events,
config.yaml and checkpoints model_XXXXXXX.pth / model_final.pth (with the config inside); the
config dump and the environment table go to OUTPUT_DIR/log.txt, not the console.
Run length: SOLVER.MAX_ITER -1 (default) = PRETRAIN.EPOCHS over the dataset; N > 0 = N iterations;
0 is refused. The config is checked when it is loaded (choices of every key that picks a code
path, contradictions such as CLSA/CoKe/SMoG sizes); such an error, like a bad proposal file or
weights, prints one line "error: ..." and exits with status 2 (traceback with --debug or
SOCO_DEBUG=1).
Representation health (PRETRAIN.HEALTH, every 50 iterations and at the end: weight norms against
the start, the stem's effective rank, embedding spread, cluster occupancy) goes to metrics.json
as health/*, with a warning naming the metric, layer and iteration when one crosses its
threshold, a one-line summary at the end and OUTPUT_DIR/health.json (docs/TRANSFER.md).
"""

import sys
from datetime import timedelta

from detectron2.engine import default_argument_parser

import soco.modeling.meta_arch  # noqa: F401  (registers the methods in META_ARCH_REGISTRY)
from soco.config.defaults import load_pretrain_config
from soco.engine.launch import launch
from soco.engine.pretrain import pretrain_main
from soco.engine.run_guard import add_overwrite_argument
from soco.utils.errors import add_debug_argument, run_tool


def argument_parser():
    """Detectron2's default arguments, --overwrite, --debug, and a rendezvous on a free port by
    default (Detectron2's default is a fixed port, on which two jobs of one machine collide)."""
    parser = add_debug_argument(add_overwrite_argument(default_argument_parser(epilog=__doc__)))
    parser.set_defaults(dist_url="auto")
    for action in parser._actions:
        if action.dest == "dist_url":
            action.help = ("rendezvous of the processes: 'auto' (default) picks a free local port (one machine); "
                           "with --num-machines > 1 give every machine tcp://MACHINE0_ADDRESS:PORT. Not used "
                           "under torchrun or srun, whose MASTER_ADDR/MASTER_PORT are read instead")
    return parser


def launch_main(args):
    launch_cfg = load_pretrain_config(args.config_file, args.opts)
    launch(
        pretrain_main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=launch_cfg.MODEL.DEVICE,
        timeout=timedelta(minutes=launch_cfg.PRETRAIN.DIST_TIMEOUT_MINUTES),
    )


if __name__ == "__main__":
    args = argument_parser().parse_args()
    sys.exit(run_tool(launch_main, args, debug=args.debug))
