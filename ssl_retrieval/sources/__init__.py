"""Built-in raw data sources; each writes items, pairs, schema and README in the raw format.

`python -m ssl_retrieval.sources --source=NAME --output_dir=DIR` (see `__main__.py`), or from
Python: `sources.builtin.build(SourceConfig(...))` (any source by name), or one source's own
`sources.debian.build(...)`, `sources.movielens.build(...)`, `sources.synthetic.build(...)`,
`sources.linked.build(...)`.
"""
