build-asan/src/tls/tls.o: src/tls/tls.c src/tls/tls.h src/base/file.h
src/tls/tls.h:
src/base/file.h:
