"""Research drivers built on the library: many runs of the config files (`runner`), the halting
ablation (`ablation`) and the reproduction of the paper's findings (`reproduce`). Nothing in the
library imports them; `python -m anira_jax.ablation` and `python -m anira_jax.reproduce` are their
command lines."""
