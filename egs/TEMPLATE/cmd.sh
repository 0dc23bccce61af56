# How parallel jobs are launched: `$cmd JOB=1:N log/x.JOB.log command ... JOB ...`.
# Local machine (default): N jobs, at most --max_jobs_run at once (default: the core count).
export cmd="utils/run.py"
# Slurm: one sbatch array job, per-job logs; add partition/time/mem as your cluster needs.
# export cmd="utils/run.py --backend slurm --slurm_opts '--partition=cpu --time=4:00:00 --mem=8G'"
# Training on GPUs with Slurm (one task per node, torchrun inside):
# export train_cmd="utils/run.py --backend slurm --slurm_opts '--partition=gpu --gres=gpu:8'"
export train_cmd="utils/run.py"
