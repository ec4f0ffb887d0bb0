import os
import sys

print(f"{os.environ.get('GREETING', 'Hello')} from Python {sys.version_info[0]}.{sys.version_info[1]} in run {os.environ['RUN_NAME']}")
if len(sys.argv) > 1:
    print("arguments:", sys.argv[1:])
