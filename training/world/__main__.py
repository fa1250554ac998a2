"""`python -m training.world export-eval|export-fewshot`: the demo world as files."""

from training.world.export import main

main()
