# Load ollama-magic on the first use of %ollama / %%ollama, in IPython and in every kernel.
# Opt in with `python -m ollama_magic.autoload install` (it adds this line to your profile's
# ipython_config.py), or copy the line there yourself. Without it: `%load_ext ollama_magic`.
c.MagicsManager.lazy_magics.update({"ollama": "ollama_magic"})  # noqa: F821 - IPython's config
