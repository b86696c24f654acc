"""The experiment lab: `grace demo`, the text corpora, the training loop, the sample providers
and the studies (the paper table, the LM study, the synthetic quality benchmark).

It sits on top of everything: it may import the service, the workers and the client, and none
of them imports it (an import-linter contract says so). No image ships it; install it with the
`lab` extra.
"""
