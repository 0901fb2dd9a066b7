"""Preprocessing of the user's input before it goes upstream, for every client.

A request asks for it with `X-Study-Preprocess: whitespace, truncate=N, pii, template=NAME`;
an alias can ask for it in the config (`[aliases.NAME] preprocess = [...]`), and the header
adds to what the alias does. The preprocessed body is what goes upstream, what the cache and
single-flight key on, and what the log keeps (`prompt` and `request_json`): the log never holds
what a step removed. The row's `metadata.preprocess` says which steps ran and what they changed.
"""
