"""Sphinx configuration of the course website (``make book``).

The sources are staged by ``docs/book/build.py`` into ``build/book-src/`` (the committed, executed notebooks,
``docs/*.md``, ``figures/`` and this folder's pages), then built into ``build/book/``. Notebooks are never run here.
"""

project = "dpt: Discriminative Probing and Tuning, a course"
author = "dpt contributors"
copyright = "dpt contributors, MIT licence"

extensions = ["myst_nb", "sphinx_design"]

# the notebooks carry their toy-scale outputs: render them, never execute them
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
nb_code_prompt_show = "Show {type}"
nb_code_prompt_hide = "Hide {type}"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_allow_space = False  # "$5 and $10" in prose is not math
myst_heading_anchors = 3  # GitHub-style "page.md#a-heading" links resolve

root_doc = "index"
exclude_patterns = ["figures/**", "**/.ipynb_checkpoints", "_build"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

html_theme = "sphinx_book_theme"
html_title = "dpt course"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
html_copy_source = True  # the download button offers each page's source (.md, .ipynb with its outputs)
html_show_sourcelink = False
