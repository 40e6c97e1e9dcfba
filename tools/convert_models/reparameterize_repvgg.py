"""The command path of the published RepVGG model page, kept working:

    python tools/convert_models/reparameterize_repvgg.py CONFIG SRC DST

runs tools/reparameterize_repvgg.py (same arguments, output and exit code).
"""
import os
import runpy

if __name__ == '__main__':
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'reparameterize_repvgg.py'), run_name='__main__')
