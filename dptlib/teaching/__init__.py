"""The course: ``checks`` (each exercise's ``check_*``) and ``exercises`` (the generator of the
exercise notebooks from the solutions)."""
