"""transferlens: what is being transferred in transfer learning?

The analyses of Neyshabur, Sedghi & Zhang (NeurIPS 2020) -- feature reuse by block
shuffling, common and uncommon mistakes, CKA, parameter distances, performance
barriers, module criticality and the choice of pre-training checkpoint -- for any
PyTorch models and data, with the paper's training protocol to produce them.
"""

__version__ = "0.1.0"
