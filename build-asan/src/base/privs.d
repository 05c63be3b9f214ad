build-asan/src/base/privs.o: src/base/privs.c src/base/privs.h \
 src/base/file.h
src/base/privs.h:
src/base/file.h:
