"Shared by the compare and sweep tests: the console script, and a 2-digit task small enough to train and measure in seconds."
import sys
from pathlib import Path

EXE = str(Path(sys.executable).parent / 'flowrl_nb')  # the console script of this environment
# a 2-digit task: 3,616 completions per prompt, so exact coverage takes well under a second
SMALL = dict(task_max_digits=2, max_completion_length=3, task_min_target=5, task_max_target=10, prompts_per_step=4,
             num_generations=4, save_steps=0, coverage_steps=2, learning_rate=5e-3)
SETS = [x for k, v in SMALL.items() for x in ('--set', f'{k}={v}')]  # SMALL as `--set key=value` arguments
