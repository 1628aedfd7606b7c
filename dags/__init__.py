# This folder is also the package icr.dags of the wheel (pyproject.toml maps it there), so that an
# installed copy can load these files from the package (see the deployment guides in docs/).
# (Kept free of the word that would make the scheduler parse this file.)
